"""The bad-input catalogue (docs/reliability.md): every row is one case here.

Each case runs the real console entry point (`python -m pspo_eval …`) in a subprocess, as a user
would, and checks: exit code 2, exactly one line on stderr that names the problem and the fix, no
traceback, and nothing half-written in the output directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from judge_helpers import make_run, sample

from pspo_eval.paths import rubrics_dir

PY = sys.executable
DEMO = "smollm2-135m-instruct"


def _cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "pspo_eval", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PSPO_EVAL_QUIET": "1", **(env or {})})


def _files(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".lock")


def _assert_one_line(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    err = proc.stderr.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def _rubric(tmp_path: Path, mutate) -> Path:
    src = rubrics_dir() / "math_response_quality.yaml"
    data = yaml.safe_load(src.read_text())
    mutate(data)
    path = tmp_path / "bad_rubric.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _judge_run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "jrun", [sample("m", "p1", "The answer is #### 5")])


# (id, argv builder, fragments expected in the message, what must stay empty)
def _cases(tmp_path: Path):
    out = tmp_path / "out"
    not_model = tmp_path / "empty_dir"
    not_model.mkdir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    bad_json = tmp_path / "bad_json.jsonl"
    bad_json.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "oops"\n')
    missing = tmp_path / "missing_field.jsonl"
    missing.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?"}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    ev = ["evaluate", "--out", str(out)]
    return [
        ("nonexistent model path", [*ev, "-m", str(tmp_path / "nope")], ["not found", "check the path"], out),
        ("directory that is not a model", [*ev, "-m", str(not_model)], ["not a model", "config.json"], out),
        ("file given as a model", [*ev, "-m", str(a_file)], ["is a file"], out),
        ("hub id while offline", [*ev, "-m", "some-org/some-model"], ["offline", "not in the local cache"], out),
        ("unknown dataset name", [*ev, "-m", DEMO, "--datasets", "gsm8k,gsm9k"], ["gsm9k", "gsm8k"], out),
        ("dataset file with bad JSON", [*ev, "-m", DEMO, "--datasets", "bad_json", "--dataset-file", str(bad_json)],
         ["bad_json.jsonl", "line 2"], out),
        ("dataset file missing a field", [*ev, "-m", DEMO, "--datasets", "missing_field", "--dataset-file", str(missing)],
         ["missing_field.jsonl", "line 2", "answer"], out),
        ("empty dataset file", [*ev, "-m", DEMO, "--datasets", "empty", "--dataset-file", str(empty)],
         ["empty.jsonl", "empty"], out),
        ("negative temperature", [*ev, "-m", DEMO, "--temperature", "-0.2"], ["temperature must be >= 0"], out),
        ("--shard 3/2", [*ev, "-m", DEMO, "--shard", "3/2"], ["--shard 3/2", "1/2 and 2/2"], out),
        ("train: alpha outside [0, 1]", ["train", "--config", "demo-cpu", "--set", "objective.alpha=1.5", "--out", str(out)],
         ["alpha"], out),
        ("train: epsilon < 0", ["train", "--config", "demo-cpu", "--objective", "clip", "--set", "objective.epsilon=-0.1",
                                "--out", str(out)], ["epsilon"], out),
        ("train: num_generations < 2", ["train", "--config", "demo-cpu", "--set", "rollout.num_generations=1", "--out", str(out)],
         ["num_generations"], out),
        ("train: unknown config key", ["train", "--config", "demo-cpu", "--set", "optim.lr=1e-5", "--out", str(out)],
         ["optim.lr", "learning_rate"], out),
    ]


@pytest.mark.parametrize("index", range(14))
def test_bad_input_rows(tmp_path, index):
    name, argv, fragments, out = _cases(tmp_path)[index]
    proc = _cli(*argv, env={"HF_HUB_OFFLINE": "1"})
    _assert_one_line(proc, *fragments)
    assert _files(out) == [], f"{name}: files were written: {_files(out)}"


@pytest.mark.parametrize(
    "name, mutate, fragments",
    [
        ("unknown mode", lambda d: d.update(mode="holistic"), ["mode"]),
        ("scale min > max", lambda d: d["criteria"][0].update(scale={5: "best", 1: "worst", 3: "ok"}), ["scale"]),
        ("missing criteria", lambda d: d.pop("criteria"), ["criteria"]),
    ],
)
def test_invalid_rubric(tmp_path, name, mutate, fragments):
    run = _judge_run(tmp_path)
    before = _files(run)
    proc = _cli("judge", "--run", str(run), "--judge", "local", "--rubric", str(_rubric(tmp_path, mutate)))
    _assert_one_line(proc, "bad_rubric.yaml", *fragments)
    assert _files(run) == before


def test_unknown_judge_spec(tmp_path):
    run = _judge_run(tmp_path)
    before = _files(run)
    proc = _cli("judge", "--run", str(run), "--judge", "gpt-4o")
    _assert_one_line(proc, "unknown judge spec", "openai:MODEL")
    assert _files(run) == before


def test_unreachable_judge_url(tmp_path):
    run = _judge_run(tmp_path)
    before = _files(run)
    proc = _cli("judge", "--run", str(run), "--judge", "http://127.0.0.1:9/v1::some-model", "--max-retries", "0")
    _assert_one_line(proc, "127.0.0.1:9")
    after = _files(run)
    assert not [f for f in after if f not in before and f.startswith("judgments/") and f.endswith(".jsonl")
                and (run / f).read_text().strip()], after


def test_debug_shows_the_traceback(tmp_path):
    proc = _cli("--debug", "evaluate", "-m", DEMO, "--shard", "3/2", "--out", str(tmp_path / "o"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "PspoError" in proc.stderr


def test_catalogue_in_the_docs_names_every_case(tmp_path):
    doc = (Path(__file__).resolve().parents[2] / "docs" / "reliability.md").read_text()
    names = [c[0] for c in _cases(tmp_path)]
    assert len(names) == 14  # the parametrisation of test_bad_input_rows covers them all
    for name in [*names, "unknown mode", "scale min > max", "missing criteria", "unknown judge spec",
                 "unreachable judge URL"]:
        assert f"| {name} |" in doc, name


def test_every_test_the_reliability_doc_names_exists():
    import re

    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "reliability.md").read_text()
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", doc)
    assert len(named) >= 15
    for file, name in named:
        assert f"def {name}(" in (root / file).read_text(), f"{file}::{name}"
    for file in re.findall(r"`(tests/[\w/]+\.py)`", doc):
        assert (root / file).exists(), file
