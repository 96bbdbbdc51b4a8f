"""`pspo-eval regress` and `pspo-eval baseline save`: decisions on constructed cases, outputs, exit codes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from test_report_helpers import greedy, pattern, rec, write_run
from typer.testing import CliRunner

from pspo_eval.cli import app
from pspo_eval.errors import PspoError
from pspo_eval.report.regress import decide


def _verdicts(n: int, right: set[int]) -> dict[str, bool]:
    return {f"p{i}": i in right for i in range(n)}


def _run(root, model: str, datasets: dict[str, list[bool]], **kw):
    rows = []
    for d, verdicts in datasets.items():
        rows += greedy(model, d, verdicts)
    return write_run(root, rows, **kw)


def _regress(tmp_path, run, baseline, *extra, env=None):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["regress", "--run", str(run), "--baseline", str(baseline), "--out", str(out),
                                      "--n-boot", "200", *extra], env=env)
    return result, out


# --------------------------------------------------------------------------------------------------
# The decision rule on constructed cases
# --------------------------------------------------------------------------------------------------


def test_clear_drop_is_a_regression_with_mcnemar_by_hand():
    # 40 problems; the baseline gets p0..p29 right, the run p0..p17: 12 discordant pairs, all against the run.
    verdict = decide(_verdicts(40, set(range(30))), _verdicts(40, set(range(18))), max_drop=1.0, alpha=0.05)
    assert verdict["status"] == "regression"
    assert verdict["drop"] == pytest.approx(30.0)
    assert (verdict["run_only"], verdict["baseline_only"]) == (0, 12)
    assert verdict["p_value"] == pytest.approx(2 / 2**12)  # 2 * C(12, 0) / 2^12
    assert verdict["ci_high"] < 0


def test_noise_sized_drop_is_not_a_regression():
    # 50 problems, 3 pairs lost and 1 won: a 4-point drop, but p = 2 * (1 + 4) / 16 = 0.625.
    base = _verdicts(50, set(range(20)))
    run = _verdicts(50, set(range(3, 20)) | {45})
    verdict = decide(base, run, max_drop=1.0, alpha=0.05)
    assert verdict["drop"] == pytest.approx(4.0)
    assert verdict["p_value"] == pytest.approx(0.625)
    assert verdict["status"] == "ok" and "within noise" in verdict["reason"]


def test_significant_but_tolerated_drop_is_not_a_regression():
    # 2000 problems, 18 lost and none won: p = 2 / 2^18 is tiny, but the drop (0.9 points) is within --max-drop 1.
    base = _verdicts(2000, set(range(1000)))
    run = _verdicts(2000, set(range(18, 1000)))
    verdict = decide(base, run, max_drop=1.0, alpha=0.05)
    assert verdict["p_value"] < 1e-4
    assert verdict["drop"] == pytest.approx(0.9)
    assert verdict["status"] == "ok" and "tolerated" in verdict["reason"]
    assert decide(base, run, max_drop=0.5, alpha=0.05)["status"] == "regression"


def test_improvement_and_no_change():
    base = _verdicts(40, set(range(10)))
    better = decide(base, _verdicts(40, set(range(25))), max_drop=1.0, alpha=0.05)
    assert better["status"] == "improved" and better["drop"] == pytest.approx(-37.5)
    same = decide(base, dict(base), max_drop=1.0, alpha=0.05)
    assert same["status"] == "ok" and same["p_value"] == 1.0 and same["reason"] == "no change"


def test_only_paired_problems_count():
    base = {"a": True, "b": True, "c": False}
    run = {"b": False, "c": False, "d": True, "e": True}  # a is missing, d and e are extra
    verdict = decide(base, run, max_drop=1.0, alpha=0.05)
    assert verdict["n"] == 2
    assert verdict["baseline_accuracy"] == pytest.approx(0.5) and verdict["run_accuracy"] == 0.0
    with pytest.raises(PspoError, match="no problem in common"):
        decide({"a": True}, {"z": True}, max_drop=1.0, alpha=0.05)


# --------------------------------------------------------------------------------------------------
# The command: exit codes, outputs
# --------------------------------------------------------------------------------------------------


def test_clear_drop_exits_1_and_writes_summary_junit_and_step_summary(tmp_path):
    baseline = _run(tmp_path / "base", "ckpt", {"gsm8k": pattern(40, 30), "svamp": pattern(20, 10)})
    run = _run(tmp_path / "new", "ckpt", {"gsm8k": pattern(40, 18), "svamp": pattern(20, 10)})
    saved = tmp_path / "baseline.json"
    assert CliRunner().invoke(app, ["baseline", "save", "--run", str(baseline), "--out", str(saved)]).exit_code == 0
    step_summary = tmp_path / "step_summary.md"
    step_summary.write_text("earlier step\n")
    result, out = _regress(tmp_path, run, saved, env={"GITHUB_STEP_SUMMARY": str(step_summary)})
    assert result.exit_code == 1, result.output
    assert "REGRESSION" in result.output
    summary = (out / "summary.md").read_text()
    assert "❌ Regression" in summary and "| ckpt | ckpt | GSM8K | 40 | 75.0 | 45.0 | -30.0" in summary
    assert step_summary.read_text().startswith("earlier step\n") and "❌ Regression" in step_summary.read_text()
    suites = ET.parse(out / "junit.xml").getroot()
    assert suites.get("tests") == "2" and suites.get("failures") == "1"
    cases = {c.get("name"): c for c in suites.iter("testcase")}
    assert cases["gsm8k"].find("failure") is not None and cases["svamp"].find("failure") is None
    data = json.loads((out / "regress.json").read_text())
    assert data["regressed"] is True and {c["status"] for c in data["checks"]} == {"regression", "ok"}


def test_noise_and_improvement_exit_0(tmp_path):
    baseline = _run(tmp_path / "base", "ckpt", {"gsm8k": pattern(50, 20)})
    noisy = _run(tmp_path / "noisy", "ckpt", {"gsm8k": pattern(50, 18)})
    better = _run(tmp_path / "better", "ckpt", {"gsm8k": pattern(50, 40)})
    result, out = _regress(tmp_path, noisy, baseline)
    assert result.exit_code == 0, result.output
    assert "✅ No regression" in (out / "summary.md").read_text()
    assert ET.parse(out / "junit.xml").getroot().get("failures") == "0"
    result, out = _regress(tmp_path, better, baseline)
    assert result.exit_code == 0 and "improved" in result.output


def test_baseline_file_and_baseline_run_give_the_same_verdicts(tmp_path):
    baseline = _run(tmp_path / "base", "ckpt", {"gsm8k": pattern(40, 30)})
    run = _run(tmp_path / "new", "ckpt", {"gsm8k": pattern(40, 20)})
    saved = tmp_path / "b.json"
    CliRunner().invoke(app, ["baseline", "save", "--run", str(baseline), "--out", str(saved)])
    data = json.loads(saved.read_text())
    entry = data["models"]["ckpt"]["datasets"]["gsm8k"]
    assert entry["n"] == 40 and entry["correct"] == 30 and entry["problems"]["gsm8k-0"] is True
    assert data["source"]["config_hash"] == "cfg0" and data["source"]["dataset_checksums"]["gsm8k"] == "sha-gsm8k"
    r1, out1 = _regress(tmp_path, run, saved)
    checks_file = json.loads((out1 / "regress.json").read_text())["checks"]
    r2, out2 = _regress(tmp_path, run, baseline)
    checks_run = json.loads((out2 / "regress.json").read_text())["checks"]
    assert r1.exit_code == r2.exit_code == 1
    assert checks_file == checks_run


def test_missing_dataset_exits_2_with_one_line(tmp_path):
    baseline = _run(tmp_path / "base", "ckpt", {"gsm8k": pattern(10, 5), "math500": pattern(10, 2)})
    run = _run(tmp_path / "new", "ckpt", {"gsm8k": pattern(10, 5)})
    result, out = _regress(tmp_path, run, baseline)
    assert result.exit_code == 2
    assert "lacks greedy results for baseline dataset(s) math500" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_extra_datasets_partial_overlap_and_changed_checksums_are_noted(tmp_path):
    baseline = _run(tmp_path / "base", "ckpt", {"gsm8k": pattern(10, 5)})
    run_rows = greedy("ckpt", "gsm8k", pattern(8, 4)) + greedy("ckpt", "svamp", pattern(5, 5))
    run = write_run(tmp_path / "new", run_rows, checksums={"gsm8k": "other", "svamp": "sha-svamp"})
    result, out = _regress(tmp_path, run, baseline)
    assert result.exit_code == 0, result.output
    summary = (out / "summary.md").read_text()
    assert "2 of the baseline's 10 problems are not in the run" in summary
    assert "checksum" in summary
    assert "not in the baseline, not checked: SVAMP" in summary


def test_model_pairing_rules(tmp_path):
    two = write_run(tmp_path / "two", greedy("base", "gsm8k", pattern(10, 5)) + greedy("other", "gsm8k", pattern(10, 9)))
    run = _run(tmp_path / "new", "ckpt-200", {"gsm8k": pattern(10, 5)})
    result, _ = _regress(tmp_path, run, two)
    assert result.exit_code == 2 and "--baseline-model" in result.output
    result, out = _regress(tmp_path, run, two, "--baseline-model", "base")
    assert result.exit_code == 0, result.output
    result, _ = _regress(tmp_path, run, two, "--baseline-model", "nobody")
    assert result.exit_code == 2 and "not in" in result.output
    # A baseline with one model pairs with whatever the run's model is called.
    one = _run(tmp_path / "one", "base", {"gsm8k": pattern(10, 9)})
    result, out = _regress(tmp_path, run, one)
    assert "| ckpt-200 | base | GSM8K |" in (out / "summary.md").read_text()
    # --model selects which models of the run are checked.
    both = write_run(tmp_path / "both", greedy("base", "gsm8k", pattern(10, 5)) + greedy("ckpt", "gsm8k", pattern(10, 0)))
    assert _regress(tmp_path, both, one, "--model", "base")[0].exit_code == 0
    assert _regress(tmp_path, both, one)[0].exit_code == 1  # ckpt (0/10) against base (9/10)


@pytest.mark.parametrize("content, message", [
    ("not json", "is not valid JSON"),
    ('{"format": "something-else"}', "is not a pspo-eval baseline file"),
    ('{"format": "pspo-eval-baseline", "version": 99, "models": {}}', "format version 99"),
    ('{"format": "pspo-eval-baseline", "version": 1, "models": {"m": {"datasets": {"gsm8k": {"problems": {"p": 1}}}}}}',
     "malformed"),
])
def test_bad_baseline_files_exit_2(tmp_path, content, message):
    run = _run(tmp_path / "new", "ckpt", {"gsm8k": pattern(10, 5)})
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result, _ = _regress(tmp_path, run, bad)
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize("extra, message", [
    (["--alpha", "1.5"], "--alpha"),
    (["--max-drop", "-1"], "--max-drop"),
    (["--model", "nobody"], "no model named 'nobody'"),
])
def test_bad_options_exit_2(tmp_path, extra, message):
    run = _run(tmp_path / "new", "ckpt", {"gsm8k": pattern(10, 5)})
    result, _ = _regress(tmp_path, run, run, *extra)
    assert result.exit_code == 2 and message in result.output


def test_missing_baseline_path_and_baseline_without_greedy_exit_2(tmp_path):
    run = _run(tmp_path / "new", "ckpt", {"gsm8k": pattern(10, 5)})
    result, _ = _regress(tmp_path, run, tmp_path / "nowhere.json")
    assert result.exit_code == 2 and "no such file or run directory" in result.output
    sampled = write_run(tmp_path / "sampled", [rec("ckpt", "gsm8k", "p0", True, t=0.8)])
    result = CliRunner().invoke(app, ["baseline", "save", "--run", str(sampled), "--out", str(tmp_path / "b.json")])
    assert result.exit_code == 2 and "no greedy" in result.output
