"""JudgeConfig: one model for `pspo-eval judge`'s options, its --config/--set file, judge_run and the pipeline."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pspo_eval.errors import PspoError
from pspo_eval.judge.config import JudgeConfig, judge_config


def _cli(*args: str):
    from pspo_eval.cli import app

    return CliRunner().invoke(app, ["judge", *args])


def test_range_checks_name_the_option():
    with pytest.raises(PspoError, match="--repeats must be at least 1, got 0"):
        judge_config(repeats=0)
    with pytest.raises(PspoError, match="--pairs must be 'baseline' or 'all'"):
        judge_config(pairs="some")
    assert JudgeConfig().timeout_for("local") == 900.0 and JudgeConfig().timeout_for("openai") == 120.0
    assert JudgeConfig(timeout=5).timeout_for("local") == 5


def test_config_file_with_set_and_options_on_top(tmp_path):
    path = tmp_path / "judge.yaml"
    path.write_text("judges: [local]\nrepeats: 2\n")
    missing = str(tmp_path / "no-run")
    result = _cli("--config", str(path), "--run", missing)  # valid settings: the missing run is the error
    assert result.exit_code == 2 and "does not exist" in result.output
    result = _cli("--config", str(path), "--set", "repeats=0", "--run", missing)
    assert result.exit_code == 2 and "--repeats must be at least 1" in result.output
    result = _cli("--config", str(path), "--set", "repeats=3", "--repeats", "0", "--run", missing)
    assert result.exit_code == 2 and "--repeats must be at least 1" in result.output  # the option wins
    path.write_text("judges: [local]\nrepeat: 2\n")
    result = _cli("--config", str(path), "--run", missing)
    assert result.exit_code == 2 and "repeats" in result.output


def test_the_pipeline_hands_judge_run_a_judge_config(monkeypatch):
    from pspo_eval.judge import server
    from pspo_eval.pipeline import judge_configs, load_experiment

    monkeypatch.setattr(server, "best_local_judge", lambda: "vllm")
    exp = load_experiment("demo")
    assert exp.judge is not None
    absolute, pairwise = judge_configs(exp.judge, exp.base_label)
    assert absolute.model_dump(exclude_defaults=True) == {
        "judges": ["vllm"], "per_dataset": 1, "reasks": 1, "max_tokens": 400, "datasets": ["gsm8k", "math500"]}
    assert (pairwise.rubric, pairwise.pairwise_baseline, pairwise.repeats) == ("math_pairwise", "base", 1)
    assert exp.evaluate.sampling().max_new_tokens == 128 and exp.evaluate.backend_config().batch_size == 64
