"""The evaluate stage: keys, sharding, metrics, the run store's resume/kill/merge behaviour, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pspo_eval.cli import app
from pspo_eval.errors import PspoError
from pspo_eval.evaluate import (
    EvalConfig,
    ModelSpec,
    SamplingConfig,
    load_problems,
    parse_model_specs,
    parse_shard,
    plan,
    run_evaluate,
)
from pspo_eval.metrics import compute_results, summarize_group
from pspo_eval.stats import maj_at_k, pass_at_k, wilson_interval
from pspo_eval.store import LockHeld, RunStore

PY = sys.executable
DEMO = "smollm2-135m-instruct"


def _cfg(**kw) -> EvalConfig:
    base = dict(models=[ModelSpec(name="demo", ref=DEMO)], datasets=["gsm8k"], limit=4)
    base.update(kw)
    return EvalConfig(**base)


def _record(pid, idx, correct, extracted, *, category=None, finish="stop", tokens=10, strict=None):
    return {
        "key": f"{pid}-{idx}", "model": "m", "model_id": "m", "dataset": "gsm8k", "problem_id": pid,
        "sample_index": idx, "setting": "s", "temperature": 0.8, "top_p": 0.9, "max_new_tokens": 128,
        "seed": 0, "prompt": "", "response": "", "finish_reason": finish, "prompt_tokens": 5,
        "completion_tokens": tokens, "gold": "1", "extracted": extracted, "correct": correct,
        "strict": correct if strict is None else strict, "method": "hash", "category": category, "level": None,
        "gen_seconds": 0.5,
    }


# -- pure pieces ---------------------------------------------------------------------------------------


def test_metrics_one_sample_per_problem_uses_wilson():
    recs = [_record(f"p{i}", 0, i < 3, str(i)) for i in range(10)]
    row = summarize_group(recs)
    assert row.accuracy == pytest.approx(0.3)
    assert row.ci_method == "wilson"
    assert row.ci95 == pytest.approx(list(wilson_interval(3, 10)))
    assert row.pass_at_k == {"1": pytest.approx(0.3)}


def test_metrics_several_samples_pass_and_maj_by_hand():
    # p1: answers 5,5,7,5 with 5 correct; p2: 2,3,3,3 with 2 correct; p3: none extractable.
    recs = [
        _record("p1", 0, True, "5"), _record("p1", 1, True, "5"), _record("p1", 2, False, "7"), _record("p1", 3, True, "5"),
        _record("p2", 0, True, "2"), _record("p2", 1, False, "3"), _record("p2", 2, False, "3"), _record("p2", 3, False, "3"),
        _record("p3", 0, False, None), _record("p3", 1, False, None), _record("p3", 2, False, None), _record("p3", 3, False, None, finish="length"),
    ]
    row = summarize_group(recs)
    assert row.samples_per_problem == 4 and row.problems == 3
    assert row.accuracy == pytest.approx(4 / 12)
    for k in (1, 2, 4):
        expected = (pass_at_k(4, 3, k) + pass_at_k(4, 1, k) + pass_at_k(4, 0, k)) / 3
        assert row.pass_at_k[str(k)] == pytest.approx(expected)
    # maj@4: p1 majority 5 (correct), p2 majority 3 (wrong), p3 nothing -> 1/3.
    assert row.maj_at_k["4"] == pytest.approx(1 / 3)
    assert row.maj_at_k["2"] == pytest.approx(
        (maj_at_k(["5", "5", "7", "5"], [True, True, False, True], 2) + maj_at_k(["2", "3", "3", "3"], [True, False, False, False], 2)) / 3
    )
    assert row.truncation_rate == pytest.approx(1 / 12)
    assert row.ci_method == "bootstrap-problems"
    assert row.ci95[0] <= row.accuracy <= row.ci95[1]


def test_metrics_breakdowns_and_throughput():
    recs = [_record("a", 0, True, "1", category="x"), _record("b", 0, False, "2", category="x"),
            _record("c", 0, True, "1", category="y")]
    row = summarize_group(recs)
    assert row.model_dump()["by_category"] == {"x": {"n": 2, "accuracy": 0.5}, "y": {"n": 1, "accuracy": 1.0}}
    assert row.samples_per_second == pytest.approx(3 / 1.5)


def test_parse_shard_and_model_specs():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("3/2", "0/2", "1/0", "x", "1-2"):
        with pytest.raises(PspoError):
            parse_shard(bad)
    specs = parse_model_specs(["base=smollm2-135m-instruct", "Qwen/Qwen2.5-0.5B"])
    assert [(s.name, s.ref) for s in specs] == [("base", DEMO), ("Qwen2.5-0.5B", "Qwen/Qwen2.5-0.5B")]


def test_shards_partition_the_problems():
    full = load_problems(_cfg(limit=10))["gsm8k"]
    parts = [load_problems(_cfg(limit=10, shard=(i, 3)))["gsm8k"] for i in (1, 2, 3)]
    ids = [p.id for part in parts for p in part]
    assert sorted(ids) == sorted(p.id for p in full) and len(ids) == len(set(ids))


def test_keys_change_with_every_setting_and_only_then(tmp_path):
    store = RunStore(tmp_path / "run")
    problems = load_problems(_cfg())

    def keys(cfg):
        works, total, done = plan(cfg, store, problems)
        return {k for w in works for (_, _, k, _) in w.items}

    base = keys(_cfg())
    assert base == keys(_cfg()) and len(base) == 4
    assert keys(_cfg(sampling=SamplingConfig(temperatures=[0.0], seed=1))).isdisjoint(base)
    assert keys(_cfg(sampling=SamplingConfig(max_new_tokens=64))).isdisjoint(base)
    from pspo_eval.generation.prompts import PromptConfig

    assert keys(_cfg(prompt=PromptConfig(system="Answer briefly."))).isdisjoint(base)
    sampled = keys(_cfg(sampling=SamplingConfig(temperatures=[0.8], samples=3, top_p=0.9)))
    assert len(sampled) == 12 and sampled.isdisjoint(base)
    # Greedy draws one sample whatever --samples says.
    assert keys(_cfg(sampling=SamplingConfig(temperatures=[0.0], samples=8))) == base


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    store = RunStore(tmp_path / "run")
    with store.locked("evaluate (first)"):
        with pytest.raises(LockHeld) as info:
            run_evaluate(_cfg(), tmp_path / "run")
    assert "in use by pid" in str(info.value) and "evaluate (first)" in str(info.value)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--shard", "3/2"], "--shard 3/2 is out of range"),
        (["--datasets", "gsm9k"], "gsm9k"),
        (["--temperature", "-0.5"], "temperature must be >= 0"),
        (["--temperature", "hot"], "comma-separated"),
        (["--top-p", "0"], "top_p"),
        (["--backend", "openai"], "--base-url"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, fragment):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["evaluate", "-m", DEMO, "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert fragment in result.output and result.output.count("error:") == 1
    assert not (out / "samples").exists()


def test_cli_main_prints_one_line(tmp_path):
    proc = subprocess.run([PY, "-m", "pspo_eval", "evaluate", "-m", DEMO, "--shard", "3/2", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: --shard 3/2")
    assert "Traceback" not in proc.stderr


# -- the real demo model ------------------------------------------------------------------------------

EVAL_ARGS = ["-m", f"demo={DEMO}", "--datasets", "gsm8k,svamp,asdiv,math500", "--limit", "3",
             "--max-new-tokens", "16", "--dtype", "fp32", "--batch-size", "2"]


def _run_cli(out: Path, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PSPO_EVAL_QUIET": "1"}
    return subprocess.run([PY, "-m", "pspo_eval", "evaluate", *EVAL_ARGS, "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=timeout, env=env)


def _records(run: Path) -> dict[str, dict]:
    out = {}
    for shard in RunStore(run).shards("samples"):
        for line in shard.path.read_text().splitlines():
            rec = json.loads(line)
            assert rec["key"] not in out, "duplicate record"
            out[rec["key"]] = rec
    return out


def _essential(recs: dict[str, dict]) -> dict[str, tuple]:
    return {k: (r["response"], r["finish_reason"], r["correct"], r["extracted"]) for k, r in recs.items()}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "run"
    proc = _run_cli(out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.slow
def test_evaluate_all_four_benchmarks_end_to_end(clean_run):
    results = json.loads((clean_run / "results.json").read_text())
    assert {r["dataset"] for r in results["rows"]} == {"gsm8k", "svamp", "asdiv", "math500"}
    recs = _records(clean_run)
    assert len(recs) == 12
    for r in recs.values():
        assert r["finish_reason"] in {"stop", "length"} and r["completion_tokens"] <= 16
        assert r["prompt"].startswith("<|im_start|>system\nYou are a careful math solver.")
    # Every reported number is recomputed from the records.
    for row in results["rows"]:
        mine = [r for r in recs.values() if r["dataset"] == row["dataset"]]
        assert row["accuracy"] == pytest.approx(sum(r["correct"] for r in mine) / len(mine))
    manifest = json.loads((clean_run / "manifest.json").read_text())
    assert manifest["config_hash"] and manifest["versions"]["torch"] and manifest["backends"]["demo"]["decoder"] == "fast"
    assert set(manifest["dataset_checksums"]) == {"gsm8k", "svamp", "asdiv", "math500"}
    assert manifest["history"][-1]["status"] == "complete"


@pytest.mark.slow
def test_rerun_is_free_and_identical(clean_run, tmp_path):
    import shutil

    copy = tmp_path / "again"
    shutil.copytree(clean_run, copy)
    before = _records(copy)
    t0 = time.time()
    proc = _run_cli(copy)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["history"][-1]["pending_at_start"] == 0
    assert _records(copy) == before
    assert time.time() - t0 < 60  # no model is loaded when nothing is left to do


@pytest.mark.slow
def test_sigkill_and_resume_gives_the_clean_result(clean_run, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PSPO_EVAL_QUIET": "1"}
    proc = subprocess.Popen([PY, "-m", "pspo_eval", "evaluate", *EVAL_ARGS, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline:
        if out.exists() and 2 <= sum(1 for s in RunStore(out).shards("samples") for _ in s.path.read_text().splitlines()) < 12:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _records(out)
    assert 0 < len(partial) < 12, "the kill should land mid-run"
    again = _run_cli(out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _essential(_records(out)) == _essential(_records(clean_run))


@pytest.mark.slow
def test_shards_merge_into_the_full_run(clean_run, tmp_path):
    for i in (1, 2):
        proc = _run_cli(tmp_path / f"s{i}", "--shard", f"{i}/2")
        assert proc.returncode == 0, proc.stderr[-2000:]
    result = CliRunner().invoke(app, ["merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert _essential(_records(tmp_path / "m")) == _essential(_records(clean_run))
    # Merging again adds nothing.
    CliRunner().invoke(app, ["merge", str(tmp_path / "s1"), "--out", str(tmp_path / "m")])
    assert len(_records(tmp_path / "m")) == 12
    merged = compute_results(RunStore(tmp_path / "m"))
    clean = json.loads((clean_run / "results.json").read_text())
    assert [(r["dataset"], r["accuracy"]) for r in merged.to_json()["rows"]] == [(r["dataset"], r["accuracy"]) for r in clean["rows"]]


def test_backend_and_decoder_names_are_checked_where_the_config_is_read():
    from pydantic import ValidationError

    from pspo_eval.evaluate import BackendConfig
    from pspo_eval.generation.registry import BACKENDS

    assert set(BackendConfig.model_fields["name"].annotation.__args__) == set(BACKENDS)
    with pytest.raises(ValidationError, match="name"):
        BackendConfig(name="tgi")
    with pytest.raises(ValidationError, match="decoder"):
        BackendConfig(decoder="beam")
