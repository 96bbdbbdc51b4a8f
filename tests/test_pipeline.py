"""`pspo-eval pipeline`: train → evaluate → judge → report from one experiment file.

The experiment here is the demo's shape at a reduced size: a tiny random Llama (the demo model's
tokenizer, the real trainer and decoder) trained with two objectives, the base model and both
trained models evaluated, judged by the real local judge (`transformers serve` with the demo
model), and the report written. A first run whose judge stage fails (unreachable endpoint) leaves
train and evaluate done; after the experiment file is fixed, the rerun redoes only the judge and
report stages.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from train_helpers import tiny_config, tiny_workspace
from typer.testing import CliRunner

from pspo_eval.errors import PspoError
from pspo_eval.pipeline import load_experiment, run_pipeline
from pspo_eval.store import RunStore
from pspo_eval.train.config import dump_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root, model, data = tiny_workspace(tmp_path_factory.mktemp("pipe"))
    cfg = tiny_config(model, data, train={"num_iterations": 2, "max_steps": 2, "prompts_per_step": 2,
                                          "micro_batch_size": 4},
                      checkpoint={"save_every": 0, "save_final": True, "keep_last": 1})
    config = root / "train.yaml"
    config.write_text(dump_config(cfg), encoding="utf-8")
    return root, model, config


@pytest.fixture(autouse=True)
def _reward_module_on_path(tiny, monkeypatch):
    monkeypatch.syspath_prepend(str(tiny[0]))


def _experiment(path: Path, tiny, out: Path, judges: list[str]) -> Path:
    root, model, config = tiny
    path.write_text(yaml.safe_dump({
        "name": "mini",
        "out": str(out / "runs"),
        "base_model": str(model),
        "train": {"config": str(config), "objectives": ["pspo", "clip"]},
        "evaluate": {"datasets": ["gsm8k"], "limit": 2, "max_new_tokens": 8, "dtype": "fp32"},
        "judge": {"judges": judges, "per_dataset": 1, "concurrency": 1, "max_tokens": 40, "reasks": 0},
        "report": {"out": str(out / "report"), "baseline": "base", "title": "mini"},
    }), encoding="utf-8")
    return path


def _lines(run: Path, kind: str = "samples") -> list[str]:
    return sorted(line for s in RunStore(run).shards(kind) for line in s.path.read_text().splitlines())


def test_experiment_file_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nout: o\nbase_model: m\nevaluate: {limit: many}\n")
    with pytest.raises(PspoError, match="evaluate.limit"):
        load_experiment(bad)
    bad.write_text("name: x\nout: o\nbase_model: m\nstages: [train]\n")
    with pytest.raises(PspoError, match="stages"):
        load_experiment(bad)
    with pytest.raises(PspoError, match="not found"):
        load_experiment(tmp_path / "missing.yaml")
    result = CliRunner().invoke(_app(), ["pipeline", "--config", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output


def _app():
    from pspo_eval.cli import app

    return app


@pytest.mark.parametrize("installed", ["vllm", "local"])
def test_auto_judge_takes_the_settings_of_the_judge_it_picks(monkeypatch, installed):
    """The demo's `auto` judge is vLLM's server where vLLM is installed, else transformers serve;
    each brings its own settings (concurrency, budget, the pairwise rubric)."""
    from pspo_eval.judge import server
    from pspo_eval.pipeline import load_experiment, resolve_auto_judges

    monkeypatch.setattr(server, "best_local_judge", lambda: installed)
    stage = load_experiment("demo").judge
    assert stage is not None and stage.judges == ["auto"]
    judges, settings = resolve_auto_judges(stage)
    assert judges == [installed]
    if installed == "vllm":
        assert settings == {"concurrency": 8, "max_tokens": 400, "reasks": 1, "pairwise_rubric": "math_pairwise"}
    else:
        assert settings == {"concurrency": 1, "max_tokens": 160, "reasks": 1, "pairwise_rubric": None}


@pytest.mark.slow
def test_pipeline_end_to_end_then_a_failed_stage_is_redone_alone(tiny, tmp_path):
    exp = tmp_path / "exp.yaml"
    # 1. the judge endpoint is unreachable: train and evaluate finish, the judge stage fails cleanly
    _experiment(exp, tiny, tmp_path, judges=["http://127.0.0.1:9/v1::nobody"])
    result = CliRunner().invoke(_app(), ["pipeline", "--config", str(exp), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "pipeline stage 'judge' failed" in result.output and "Traceback" not in result.output
    runs = tmp_path / "runs"
    state = json.loads((runs / "pipeline.json").read_text())["stages"]
    assert state["train"]["status"] == "done" and state["evaluate"]["status"] == "done"
    assert state["judge"]["status"] == "failed" and "127.0.0.1:9" in state["judge"]["error"]
    assert "report" not in state
    finals = sorted(runs.glob("train/*/final/model.safetensors"))
    assert [p.parts[-3].split("-")[0] for p in finals] == ["clip", "pspo"]
    mtimes = [p.stat().st_mtime_ns for p in finals]
    samples = _lines(runs / "eval")
    assert len(samples) == 3 * 2  # base, pspo, clip x 2 problems

    # 2. fix the file (the real local judge) and rerun: only judge and report run
    _experiment(exp, tiny, tmp_path, judges=["local"])
    out = run_pipeline(exp, verbose=False)
    state = json.loads((runs / "pipeline.json").read_text())["stages"]
    assert all(state[s]["status"] == "done" for s in ("train", "evaluate", "judge", "report")), state
    assert [p.stat().st_mtime_ns for p in finals] == mtimes  # not retrained
    assert _lines(runs / "eval") == samples  # nothing generated again
    judged = [json.loads(line) for line in _lines(runs / "eval", "judgments")]
    assert {(j["model"], j["dataset"]) for j in judged} == {(m, "gsm8k") for m in ("base", "pspo", "clip")}
    assert all(j["outcome"] in {"ok", "parse_error", "refusal", "truncated", "api_error"} for j in judged)

    # the report holds every model, the results are the store's
    report = out["report"]
    assert report.index.exists() and (report.out / "report.md").exists()
    md = (report.out / "report.md").read_text()
    for name in ("base", "pspo", "clip"):
        assert f"| {name} " in md or f"| **{name}" in md, name
    rows = {(r["model"], r["dataset"]): r for r in out["results"].to_json()["rows"]}
    assert set(rows) == {(m, "gsm8k") for m in ("base", "pspo", "clip")}
    assert all(r["samples"] == 2 for r in rows.values())

    # 3. a third run is a no-op for train, evaluate and judge
    before = len(_lines(runs / "eval", "judgments"))
    run_pipeline(exp, verbose=False, stages=["train", "evaluate", "judge"])
    after = len(_lines(runs / "eval", "judgments"))
    assert after == before and _lines(runs / "eval") == samples


def test_experiment_overrides_go_through_the_one_config_loader():
    exp = load_experiment("demo", ["evaluate.limit=3", "name=tiny"])
    assert exp.evaluate.limit == 3 and exp.name == "tiny"
    with pytest.raises(PspoError, match="unknown config key 'evaluate.limt'.*evaluate.limit"):
        load_experiment("demo", ["evaluate.limt=3"])
