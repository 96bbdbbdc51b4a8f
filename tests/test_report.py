"""`pspo-eval report`: tables built from hand-made records, recomputed by hand; the rendered outputs."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess

import pytest
from test_report_helpers import greedy, pattern, rec, write_run
from typer.testing import CliRunner

from pspo_eval.cli import app
from pspo_eval.errors import PspoError
from pspo_eval.judge.records import Judgment
from pspo_eval.report.load import load_runs, parse_size
from pspo_eval.report.tables import accuracy_table, breakdown_table, comparison_table, greedy_summaries
from pspo_eval.store import RunStore

FOUR = ("gsm8k", "svamp", "asdiv", "math500")


def _cells(table) -> dict[tuple[str, str], object]:
    """{(row label, column header): cell} of a table."""
    return {(row[0].text, col): cell for row in table.rows for col, cell in zip(table.columns, row)}


def _column(table, prefix: str) -> str:
    return next(c for c in table.columns if c.startswith(prefix))


def _wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# --------------------------------------------------------------------------------------------------
# Table 1
# --------------------------------------------------------------------------------------------------


def test_table1_cell_is_recomputed_by_hand_from_the_records(tmp_path):
    rows = greedy("base", "gsm8k", pattern(8, 3)) + greedy("tuned", "gsm8k", pattern(8, 5))
    rows += greedy("base", "svamp", pattern(5, 4)) + greedy("tuned", "svamp", pattern(5, 2))
    # A second sample of a greedy problem is not "greedy pass@1": it must be ignored.
    rows.append(rec("base", "gsm8k", "gsm8k-7", True, idx=1))
    coll = load_runs([write_run(tmp_path / "run", rows)])
    table = accuracy_table(coll)
    cells = _cells(table)
    gsm = _column(table, "GSM8K")
    assert gsm == "GSM8K (n=8)"
    cell = cells[("base", gsm)]
    low, high = _wilson_by_hand(3, 8)
    assert cell.text == "37.5"
    assert cell.sub == f"{100 * low:.1f}–{100 * high:.1f}"
    assert not cell.bold and cells[("tuned", gsm)].bold  # 62.5 > 37.5
    svamp = _column(table, "SVAMP")
    assert cells[("base", svamp)].text == "80.0" and cells[("base", svamp)].bold
    # The average is over the paper datasets in the table (here two), unweighted: (37.5 + 80) / 2.
    average = next(r for r in table.records if r["model"] == "base" and r["dataset"] == "average")
    assert average["accuracy"] == pytest.approx((3 / 8 + 4 / 5) / 2)
    assert cells[("base", "Avg.")].text == f"{100 * (3 / 8 + 4 / 5) / 2:.1f}"
    record = next(r for r in table.records if r["model"] == "base" and r["dataset"] == "gsm8k")
    assert record["n"] == 8 and record["correct"] == 3 and record["accuracy"] == pytest.approx(3 / 8)


def test_table1_dash_without_greedy_setting_and_average_only_with_all_four(tmp_path):
    rows = []
    for d in FOUR:
        rows += greedy("base", d, pattern(4, 1))
    rows += greedy("sampled", "gsm8k", pattern(4, 2), t=0.8)  # no T = 0 at all
    rows += greedy("partial", "gsm8k", pattern(4, 4))  # one dataset only
    coll = load_runs([write_run(tmp_path / "run", rows)])
    table = accuracy_table(coll)
    cells = _cells(table)
    gsm = _column(table, "GSM8K")
    assert cells[("sampled", gsm)].text == "—"
    assert "no greedy" in cells[("sampled", gsm)].title
    assert cells[("partial", _column(table, "SVAMP"))].text == "—"
    assert cells[("base", "Avg.")].text == "25.0"
    assert cells[("partial", "Avg.")].text == "—"  # needs all four
    assert cells[("partial", gsm)].bold  # 100 % is the best GSM8K value


def test_table1_of_datasets_outside_the_paper_has_no_average(tmp_path):
    # A user's own dataset only: no average column (it used to divide by zero).
    coll = load_runs([write_run(tmp_path / "run", greedy("base", "mine", pattern(4, 3)))])
    table = accuracy_table(coll)
    assert "Avg." not in table.columns and _cells(table)[("base", table.columns[1])].text == "75.0"


def test_models_are_grouped_by_base_model_size(tmp_path):
    rows = greedy("big", "gsm8k", pattern(4, 2), model_id="Qwen/Qwen2.5-1.5B-Instruct")
    rows += greedy("small", "gsm8k", pattern(4, 1), model_id="smollm2-135m-instruct")
    rows += greedy("mystery", "gsm8k", pattern(4, 1), model_id="/ckpt/out/checkpoint-10")
    coll = load_runs([write_run(tmp_path / "run", rows)])
    table = accuracy_table(coll)
    assert [r[0].text for r in table.rows] == ["small", "big", "mystery"]
    assert list(table.groups.values()) == ["135M parameters", "1.5B parameters", "size unknown"]
    assert parse_size("org/Llama-3.2-1B") == ("1B", 1e9)
    assert parse_size("gpt2") is None


def test_a_checkpoint_size_comes_from_its_training_config(tmp_path):
    ckpt = tmp_path / "out" / "checkpoint-20"
    ckpt.mkdir(parents=True)
    (ckpt / "config.yaml").write_text("model:\n  path: smollm2-135m-instruct\nobjective:\n  name: pspo\n")
    rows = greedy("pspo@20", "gsm8k", pattern(4, 2), model_id=str(ckpt))
    coll = load_runs([write_run(tmp_path / "run", rows)])
    assert coll.models[0].size == "135M"


def test_the_same_label_in_two_runs_is_kept_apart(tmp_path):
    a = write_run(tmp_path / "first", greedy("base", "gsm8k", pattern(4, 1)))
    b = write_run(tmp_path / "second", greedy("base", "gsm8k", pattern(4, 3), max_new=256)
                  + greedy("pspo", "gsm8k", pattern(4, 4)))
    coll = load_runs([a, b])
    assert [m.name for m in coll.models] == ["base (first)", "base (second)", "pspo"]
    assert any("several runs" in w for w in coll.warnings)
    cells = _cells(accuracy_table(coll))
    assert cells[("base (first)", "GSM8K (n=4)")].text == "25.0"
    assert cells[("base (second)", "GSM8K (n=4)")].text == "75.0"
    with pytest.raises(PspoError, match="several runs"):
        coll.model_named("base")
    assert coll.model_named("base (second)").run_index == 1


def test_two_settings_at_one_temperature_are_refused_not_pooled(tmp_path):
    rows = greedy("base", "gsm8k", pattern(4, 1), max_new=64) + greedy("base", "gsm8k", pattern(4, 2), max_new=128)
    with pytest.raises(PspoError, match="2 sampling settings at T=0 on gsm8k"):
        load_runs([write_run(tmp_path / "run", rows)])


def test_a_partial_last_line_is_skipped_and_the_run_left_untouched(tmp_path):
    run = write_run(tmp_path / "run", greedy("base", "gsm8k", pattern(4, 2)))
    shard = next((run / "samples").rglob("*.jsonl"))
    with open(shard, "a", encoding="utf-8") as fh:
        fh.write('{"key": "half-writ')
    size = shard.stat().st_size
    coll = load_runs([run])
    assert len(coll.greedy(coll.models[0], "gsm8k")) == 4
    assert shard.stat().st_size == size  # a reader never repairs (a writer may be appending)


# --------------------------------------------------------------------------------------------------
# Comparison, sampling, breakdowns
# --------------------------------------------------------------------------------------------------


def test_comparison_pairs_only_shared_problems_with_mcnemar_by_hand(tmp_path):
    # Baseline right on p0..p3 of p0..p11; the model right on p2..p11 of p0..p13 (p12, p13 unpaired).
    base = [rec("base", "gsm8k", f"p{i}", i < 4) for i in range(12)]
    model = [rec("tuned", "gsm8k", f"p{i}", i >= 2) for i in range(14)]
    coll = load_runs([write_run(tmp_path / "run", base + model)])
    table = comparison_table(coll, coll.model_named("base"), n_boot=500)
    (record,) = table.records
    assert record["n_paired"] == 12
    assert record["accuracy_model"] == pytest.approx(10 / 12)
    assert record["accuracy_baseline"] == pytest.approx(4 / 12)
    assert record["diff"] == pytest.approx(6 / 12)
    # Discordant: model-only right p4..p11 (8), baseline-only right p0, p1 (2). Exact two-sided McNemar:
    # p = 2 * sum_{i<=2} C(10, i) / 2^10 = 2 * 56 / 1024.
    assert (record["model_only_correct"], record["baseline_only_correct"]) == (8, 2)
    assert record["mcnemar_p"] == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert record["ci_low"] < record["diff"] < record["ci_high"]
    assert not record["significant"]  # p = 0.109


def test_sampling_summaries_pass_at_k_by_hand(tmp_path):
    rows = greedy("base", "gsm8k", pattern(2, 1))
    # Problem q0: 4 samples at T = 0.8, one correct; q1: 4 samples, none correct.
    rows += [rec("base", "gsm8k", "q0", i == 0, t=0.8, idx=i, tokens=10 * (i + 1)) for i in range(4)]
    rows += [rec("base", "gsm8k", "q1", False, t=0.8, idx=i, tokens=10) for i in range(4)]
    from pspo_eval.report.tables import sampling_summaries, sampling_table

    coll = load_runs([write_run(tmp_path / "run", rows)])
    table = sampling_table(sampling_summaries(coll))
    record = next(r for r in table.records if r["temperature"] == 0.8)
    assert record["accuracy"] == pytest.approx(1 / 8)
    # pass@2 of q0 = 1 - C(3, 2) / C(4, 2) = 1/2; of q1 = 0; the mean over problems = 1/4.
    assert record["pass@2"] == pytest.approx(0.25)
    assert record["pass@4"] == pytest.approx(0.5)
    assert record["mean_completion_tokens"] == pytest.approx((10 + 20 + 30 + 40 + 40) / 8)
    assert "pass@4 %" in table.columns and "maj@4 %" in table.columns


def test_breakdown_by_category_and_level(tmp_path):
    rows = [rec("base", "math500", f"m{i}", i % 2 == 0, category="Algebra" if i < 4 else "Geometry", level=str(1 + i % 3))
            for i in range(8)]
    coll = load_runs([write_run(tmp_path / "run", rows)])
    table = breakdown_table(coll, greedy_summaries(coll))
    by = {(r["by"], r["value"]): r for r in table.records}
    assert by[("category", "Algebra")]["accuracy"] == pytest.approx(2 / 4)  # m0, m2 of m0..m3
    assert by[("level", "1")]["n"] == 3  # m0, m3, m6
    assert by[("level", "1")]["accuracy"] == pytest.approx(2 / 3)  # m0, m6 right
    assert list(table.groups.values()) == ["MATH-500 by category", "MATH-500 by level"]


# --------------------------------------------------------------------------------------------------
# The whole report: files, LaTeX, HTML, Markdown, CSV, provenance
# --------------------------------------------------------------------------------------------------


def _judgment(judge: str, model: str, pid: str, scores: dict | None, *, outcome: str = "ok", flags=None,
              baseline: str | None = None, mode: str = "absolute") -> Judgment:
    key = f"{judge}|{model}|{pid}|{mode}"
    return Judgment(
        key=key, item_key=key, model=model, dataset="gsm8k", problem_id=pid, sample_key=f"{model}{pid}", setting="t0",
        correct=True, baseline=baseline, judge=judge, rubric="quality" if mode != "pairwise" else "pairwise",
        rubric_version="1", rubric_hash="abc123", mode=mode, prompt_hash="p", temperature=0.0, seed=0,
        max_tokens=64, structured="prompt", outcome=outcome, scores=scores if outcome == "ok" else None,
        flags=(flags or {}) if outcome == "ok" and mode != "pairwise" else None,
        scale={k: [1, 5] for k in (scores or {})} if mode != "pairwise" else None,
    )


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """Two runs (base; two trained models with judgments), two trainers, the CLI end to end."""
    root = tmp_path_factory.mktemp("report")
    base_rows = []
    for d in FOUR:
        n = 10
        base_rows += [rec("base", d, f"{d}-{i}", i < 3, category="Counting & Probability" if d == "math500" and i % 2 else
                          ("Algebra" if d == "math500" else None), level=str(1 + i % 3) if d == "math500" else None)
                      for i in range(n)]
        base_rows += [rec("base", d, f"{d}-{i}", (i + j) % 4 == 0, t=0.8, idx=j) for i in range(n) for j in range(2)]
    base = write_run(root / "base_run", base_rows, config_hash="basehash")
    trained_rows = []
    for name, k in (("grpo_clip", 5), ("gr-pspo", 8)):
        for d in FOUR:
            trained_rows += [rec(name, d, f"{d}-{i}", i < k, category="Algebra" if d == "math500" else None,
                                 level="2" if d == "math500" else None, model_id="smollm2-135m-instruct")
                             for i in range(10)]
    trained = write_run(root / "trained_run", trained_rows, config_hash="trainhash")
    judgments = [_judgment("judge-a", m, f"gsm8k-{i}", {"clarity": 3 + (m == "gr-pspo") + (i % 2)},
                           flags={"instruction_leakage": i == 0}) for m in ("grpo_clip", "gr-pspo") for i in range(6)]
    judgments.append(_judgment("judge-a", "gr-pspo", "gsm8k-9", None, outcome="parse_error"))
    judgments.append(_judgment("judge-a", "grpo_clip", "gsm8k-9", None, outcome="refusal"))
    judgments += [_judgment("judge-a", "gr-pspo", f"gsm8k-{i}", {"overall": 1 if i < 4 else 0}, baseline="grpo_clip",
                            mode="pairwise") for i in range(6)]
    RunStore(trained).shard("judgments", "judge-a", "quality").append(judgments)
    trains = []
    for method in ("clip", "pspo"):
        out = root / f"train_{method}"
        out.mkdir()
        (out / "config.yaml").write_text(f"model:\n  path: smollm2-135m-instruct\nobjective:\n  name: {method}\n")
        lines = []
        for step in range(1, 9):
            row = {"step": step, "reward/mean": 0.1 * step, "completion_len/mean": 100 - step, "ratio/mean": 1.0,
                   "ratio/min": 0.9, "ratio/max": 1.1}
            if method == "clip":
                row["clip/clipped"] = 0.01
            else:
                row["entropy"] = None  # a non-finite value the trainer wrote as null
            lines.append(json.dumps(row))
        (out / "metrics.jsonl").write_text("\n".join(lines) + "\n" + '{"step": 9, "reward/me')  # a step in flight
        trains.append(out)
    report_dir = root / "report"
    args = ["report", "--run", str(base), "--run", str(trained), "--out", str(report_dir), "--n-boot", "200"]
    for t in trains:
        args += ["--train", str(t)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return {"dir": report_dir, "output": result.output, "base": base, "trained": trained, "root": root}


def test_report_writes_every_output(full_report):
    out = full_report["dir"]
    assert "Table 1: accuracy" in full_report["output"]
    assert f"report: {out / 'index.html'}" in full_report["output"].replace("\n", "")
    for name in ("index.html", "report.md", "provenance.json", "tables/accuracy.csv", "tables/accuracy.tex",
                 "tables/comparison.csv", "tables/sampling.csv", "tables/breakdown.csv", "tables/judge_scores.csv",
                 "tables/judge_outcomes.csv", "tables/judge_flags.csv", "tables/judge_pairwise.csv",
                 "tables/training.csv", "figures/accuracy.png", "figures/training_curves.png",
                 "figures/math500_subject_level.png", "figures/sampling_accuracy.png", "figures/judge_scores.png"):
        assert (out / name).is_file(), name
    for png in (out / "figures").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size < 300_000


def test_csv_holds_unrounded_values_from_the_records(full_report):
    with open(full_report["dir"] / "tables" / "accuracy.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    row = next(r for r in rows if r["model"] == "grpo_clip" and r["dataset"] == "gsm8k")
    assert float(row["accuracy"]) == pytest.approx(0.5) and row["n"] == "10" and row["correct"] == "5"
    assert float(row["ci_low"]) == pytest.approx(_wilson_by_hand(5, 10)[0])
    avg = next(r for r in rows if r["model"] == "gr-pspo" and r["dataset"] == "average")
    assert float(avg["accuracy"]) == pytest.approx(0.8) and avg["best"] == "True"


def test_judge_tables_count_failures_and_score_only_ok_items(full_report):
    with open(full_report["dir"] / "tables" / "judge_outcomes.csv", newline="") as fh:
        outcomes = {(r["model"], r["rubric"]): r for r in csv.DictReader(fh)}
    assert outcomes[("gr-pspo", "quality")]["parse_error"] == "1"
    assert outcomes[("grpo_clip", "quality")]["refusal"] == "1"
    assert outcomes[("gr-pspo", "quality")]["failures"] == "1"
    with open(full_report["dir"] / "tables" / "judge_scores.csv", newline="") as fh:
        scores = {r["model"]: r for r in csv.DictReader(fh)}
    # gr-pspo clarity: 4, 5, 4, 5, 4, 5 (the parse error is not a score) -> 4.5
    assert float(scores["gr-pspo"]["mean"]) == pytest.approx(4.5) and scores["gr-pspo"]["n"] == "6"
    assert float(scores["grpo_clip"]["mean"]) == pytest.approx(3.5)
    with open(full_report["dir"] / "tables" / "judge_pairwise.csv", newline="") as fh:
        (pair,) = list(csv.DictReader(fh))
    assert (pair["wins"], pair["ties"], pair["losses"]) == ("4", "2", "0")
    assert float(pair["win_rate"]) == pytest.approx(5 / 6)


def test_training_table_plots_what_exists(full_report):
    with open(full_report["dir"] / "tables" / "training.csv", newline="") as fh:
        rows = {r["run"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"GRPO-clip", "GR-PSPO"}
    assert rows["GRPO-clip"]["steps"] == "8"  # the partial line of step 9 is not a step
    assert float(rows["GR-PSPO"]["reward_last"]) == pytest.approx(0.8)
    assert rows["GR-PSPO"]["entropy_last"] == "" and rows["GR-PSPO"]["clipped_mean"] == ""
    assert float(rows["GRPO-clip"]["clipped_mean"]) == pytest.approx(0.01)


def test_latex_tables_are_well_formed_and_escaped(full_report):
    tex_files = sorted((full_report["dir"] / "tables").glob("*.tex"))
    assert len(tex_files) >= 8
    for path in tex_files:
        _check_latex(path.read_text(encoding="utf-8"), path.name)
    accuracy = (full_report["dir"] / "tables" / "accuracy.tex").read_text()
    assert r"grpo\_clip" in accuracy and "grpo_clip" not in accuracy.replace(r"grpo\_clip", "")
    assert r"\textbf{80.0}" in accuracy  # gr-pspo's GSM8K, best in its column
    breakdown = (full_report["dir"] / "tables" / "breakdown.tex").read_text()
    assert r"Counting \& Probability" in breakdown


def _check_latex(tex: str, name: str) -> None:
    body = re.sub(r"(?m)^%.*$", "", tex)
    unescaped = re.sub(r"\\[\\{}&%$#_]", "", body)
    depth = 0
    for ch in unescaped:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0, f"{name}: unbalanced braces"
    assert depth == 0, f"{name}: unbalanced braces"
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{(\w+)\}", body):
        if kind == "begin":
            stack.append(env)
        else:
            assert stack and stack.pop() == env, f"{name}: \\end{{{env}}} without its \\begin"
    assert not stack, f"{name}: unclosed {stack}"
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert rule in body, f"{name}: no {rule}"
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", body).group(1)
    inner = body.split(r"\midrule", 1)[1].split(r"\bottomrule")[0]
    header = body.split(r"\toprule", 1)[1].split(r"\midrule")[0]
    for line in [header] + inner.splitlines():
        line = line.strip()
        if not line or line == r"\midrule" or line.startswith(r"\multicolumn"):
            continue
        assert line.endswith(r"\\"), f"{name}: row without \\\\: {line}"
        assert len(re.findall(r"(?<!\\)&", line)) == len(spec) - 1, f"{name}: wrong number of & in {line}"
    text_only = re.sub(r"\$[^$]*\$", "", unescaped)  # drop the math-mode symbols the renderer writes ($\times$)
    for bad in "_%#$":
        assert bad not in text_only, f"{name}: unescaped {bad}"


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_tables_compile(full_report, tmp_path):
    inputs = "\n".join(rf"\input{{{p}}}" for p in sorted((full_report["dir"] / "tables").glob("*.tex")))
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
                   f"\\begin{{document}}\n{inputs}\n\\end{{document}}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_html_is_self_contained_and_shows_every_section(full_report):
    html = (full_report["dir"] / "index.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)=["'](https?:|//|figures/)""", html)  # nothing fetched, nothing linked
    assert html.count('src="data:image/png;base64,') == len(list((full_report["dir"] / "figures").glob("*.png")))
    for section in ("Accuracy", "Sampling", "LLM judges", "Comparison with the baseline", "Breakdowns",
                    "Training curves", "Provenance"):
        assert f">{section}</h2>" in html
    assert "basehash" in html and "trainhash" in html and "sha-gsm8k" in html and "judge-a" in html
    assert "&lt;" not in html.split("<body>")[0]


def test_markdown_links_figures_that_exist(full_report):
    md = (full_report["dir"] / "report.md").read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", md)
    assert links and all((full_report["dir"] / link).is_file() for link in links)
    assert "| **gr-pspo** |" not in md and "| gr-pspo | **80.0** (" in md


def test_provenance_lists_runs_checksums_versions_and_judges(full_report):
    prov = json.loads((full_report["dir"] / "provenance.json").read_text())
    assert [r["config_hash"] for r in prov["runs"]] == ["basehash", "trainhash"]
    assert prov["runs"][0]["dataset_checksums"]["math500"] == "sha-math500"
    assert prov["runs"][1]["versions"]["torch"] == "2.x"
    assert prov["judges"][0]["judge"] == "judge-a"
    assert {t["objective"] for t in prov["training"]} == {"clip", "pspo"}
    assert prov["baseline"] == "base"
    assert "index.html" in prov["files"]


def test_rerunning_removes_files_of_sections_that_disappeared(full_report, tmp_path):
    out = tmp_path / "r"
    shutil.copytree(full_report["dir"], out)
    result = CliRunner().invoke(app, ["report", "--run", str(full_report["base"]), "--out", str(out), "--n-boot", "200"])
    assert result.exit_code == 0, result.output
    assert not (out / "tables" / "judge_scores.csv").exists()
    assert not (out / "figures" / "training_curves.png").exists()
    assert (out / "tables" / "accuracy.csv").exists()


@pytest.mark.parametrize("args, message", [
    (["--run", "/nonexistent/run"], "no such directory"),
    (["--run", "{base}", "--baseline", "nobody"], "no model named 'nobody'"),
    (["--run", "{base}", "--train", "{root}"], "no metrics.jsonl"),
    (["--run", "{base}", "--run", "{base}"], "given twice"),
])
def test_bad_input_is_one_line_and_exit_2(full_report, tmp_path, args, message):
    args = [a.format(base=full_report["base"], root=full_report["root"]) for a in args]
    result = CliRunner().invoke(app, ["report", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_a_run_without_samples_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    RunStore(tmp_path / "empty").write_manifest({"config": {}})
    with pytest.raises(PspoError, match="no sample records"):
        load_runs([tmp_path / "empty"])


BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                if shutil.which(b)), None)


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium/Chrome installed")
def test_screenshot_in_a_headless_browser(full_report, tmp_path):
    """Open the page as a user would; the screenshot must show a rendered page (not blank, not an error)."""
    from PIL import Image

    browser = BROWSER
    shot = tmp_path / "page.png"
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2400",
         (full_report["dir"] / "index.html").resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2400)
    colors = image.getcolors(maxcolors=1 << 20)
    assert colors is None or len(colors) > 200  # text, tables and figures, not an empty page
    # The page background is the light grey of the CSS, and the white sheet is in the middle.
    assert image.getpixel((5, 5)) == (0xEE, 0xF0, 0xF3)
