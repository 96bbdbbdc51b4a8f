"""``pspo-eval regress``: does a run (a new checkpoint) fall significantly below a baseline?

Per (model, dataset) the run's greedy verdicts are paired with the baseline's on the problems both
answered. A **regression** is a drop that is both

- larger than ``max_drop`` percentage points (default 1.0): smaller drops are tolerated, and
- statistically significant: McNemar's exact test on the discordant pairs gives p < ``alpha``
  (default 0.05). A drop of the size that re-running with another seed produces is noise, not a
  regression, however it is measured.

The decision uses only paired problems, so a run on a subset (a CI slice) is compared on that
subset. A dataset of the baseline that the run lacks is bad input (exit 2), not a pass: silently
checking less than the baseline covers is how regressions slip through.

Which models are checked: every model of the run (or those named with ``--model``). Each is paired
with the baseline model of the same label, else with ``--baseline-model``, else with the baseline's
only model; anything else is ambiguous and refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pspo_eval.errors import PspoError
from pspo_eval.report.baseline import Baseline
from pspo_eval.report.load import dataset_title

REGRESSION, OK, IMPROVED = "regression", "ok", "improved"


@dataclass
class Check:
    model: str
    baseline_model: str
    dataset: str
    n: int  # paired problems
    baseline_accuracy: float
    run_accuracy: float
    drop: float  # percentage points, baseline − run (negative: the run is better)
    ci_low: float  # 95% CI of run − baseline, percentage points (paired bootstrap)
    ci_high: float
    run_only: int  # problems only the run got right
    baseline_only: int  # problems only the baseline got right
    p_value: float
    status: str
    reason: str
    notes: list[str] = field(default_factory=list)


@dataclass
class RegressResult:
    run: str
    baseline: str
    max_drop: float
    alpha: float
    checks: list[Check]
    notes: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return any(c.status == REGRESSION for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "baseline": self.baseline, "max_drop": self.max_drop, "alpha": self.alpha,
                "regressed": self.regressed, "checks": [asdict(c) for c in self.checks], "notes": self.notes}


def decide(baseline: dict[str, bool], run: dict[str, bool], *, max_drop: float, alpha: float,
           n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The verdict on one (model, dataset) from per-problem correctness (see the module docstring)."""
    from pspo_eval.report.tables import paired_comparison

    pair = paired_comparison(run, baseline, n_boot=n_boot, seed=seed)
    if pair is None:
        raise PspoError("no problem in common between the run and the baseline",
                        "evaluate the run on the same problems (same dataset, --limit/--shard) as the baseline")
    drop = -100.0 * pair.diff
    significant = pair.p_value < alpha
    if drop > max_drop and significant:
        status = REGRESSION
        reason = f"drop of {drop:.1f} pts > {max_drop:g} and McNemar p = {pair.p_value:.3g} < {alpha:g}"
    elif drop > max_drop:
        status = OK
        reason = f"drop of {drop:.1f} pts, but p = {pair.p_value:.3g} ≥ {alpha:g}: within noise"
    elif drop > 0:
        status = OK
        reason = f"drop of {drop:.1f} pts ≤ {max_drop:g} tolerated"
    elif drop < 0:
        status = IMPROVED if significant else OK
        reason = f"gain of {-drop:.1f} pts" + (f" (p = {pair.p_value:.3g})" if significant else ", not significant")
    else:
        status = OK
        reason = "no change"
    return {"n": pair.n, "baseline_accuracy": pair.acc_b, "run_accuracy": pair.acc_a, "drop": drop,
            "ci_low": 100.0 * pair.ci[0], "ci_high": 100.0 * pair.ci[1], "run_only": pair.a_only,
            "baseline_only": pair.b_only, "p_value": pair.p_value, "status": status, "reason": reason}


def run_regress(run_dir: str | Path, baseline: Baseline, *, models: list[str] | None = None,
                baseline_model: str | None = None, max_drop: float = 1.0, alpha: float = 0.05,
                n_boot: int = 2000, seed: int = 0) -> RegressResult:
    """Check every selected model of the run against the baseline (bad input raises PspoError)."""
    from pspo_eval.report.load import load_runs

    if not (max_drop >= 0 and math.isfinite(max_drop)):
        raise PspoError(f"--max-drop {max_drop} must be a number of percentage points >= 0", "e.g. --max-drop 1.0")
    if not 0 < alpha < 1:
        raise PspoError(f"--alpha {alpha} must lie strictly between 0 and 1", "e.g. --alpha 0.05")
    if baseline_model is not None and baseline_model not in baseline.models:
        raise PspoError(f"--baseline-model {baseline_model} is not in {baseline.where}",
                        f"models there: {', '.join(baseline.models)}")
    coll = load_runs([run_dir])
    checked = [coll.model_named(name) for name in models] if models else coll.models
    manifest = coll.runs[0].manifest
    result = RegressResult(str(run_dir), baseline.where, max_drop, alpha, [])
    base_sums = baseline.source.get("dataset_checksums") or {}
    run_sums = manifest.dataset_checksums or {}
    for m in checked:
        if baseline_model is not None:
            bname = baseline_model
        elif m.label in baseline.models:
            bname = m.label
        elif len(baseline.models) == 1:
            bname = next(iter(baseline.models))
        else:
            raise PspoError(f"model '{m.label}' of the run is not in the baseline, which holds several models "
                            f"({', '.join(baseline.models)})", "name the one to compare with: --baseline-model NAME")
        reference = baseline.models[bname]
        present = {d for d in coll.datasets() if coll.greedy(m, d)}
        missing = [d for d in reference.datasets if d not in present]
        if missing:
            raise PspoError(f"run {run_dir} lacks greedy results for baseline dataset(s) {', '.join(missing)} "
                            f"(model '{m.label}')",
                            "evaluate the run on every dataset of the baseline (or save a baseline without them)")
        for d, ref in reference.datasets.items():
            group = coll.group(m, d, 0.0)
            assert group is not None
            mine = {r.problem_id: r.correct for r in group.greedy()}
            try:
                verdict = decide(ref.problems, mine, max_drop=max_drop, alpha=alpha, n_boot=n_boot, seed=seed)
            except PspoError as exc:
                raise PspoError(f"{dataset_title(d)} (model '{m.label}'): {exc.message}", exc.hint) from None
            notes = []
            if verdict["n"] < ref.n:
                notes.append(f"{ref.n - verdict['n']} of the baseline's {ref.n} problems are not in the run")
            if verdict["n"] < len(mine):
                notes.append(f"{len(mine) - verdict['n']} of the run's problems are not in the baseline")
            if ref.setting and group.setting != ref.setting:
                notes.append(f"sampling settings differ (run {group.setting}, baseline {ref.setting})")
            if base_sums.get(d) and run_sums.get(d) and base_sums[d] != run_sums[d]:
                notes.append("the dataset file differs from the baseline's (checksum): problem ids may not match")
            result.checks.append(Check(m.name, bname, d, notes=notes, **verdict))
    extra = sorted({d for m in checked for d in coll.datasets() if coll.greedy(m, d)} -
                   {d for b in baseline.models.values() for d in b.datasets})
    if extra:
        result.notes.append(f"not in the baseline, not checked: {', '.join(dataset_title(d) for d in extra)}")
    return result


# --------------------------------------------------------------------------------------------------
# Outputs: a rich table, a Markdown summary, JUnit XML
# --------------------------------------------------------------------------------------------------

_MARK = {REGRESSION: "❌ regression", OK: "✅ ok", IMPROVED: "⬆️ improved"}


def _ci(c: Check) -> str:
    return f"{c.ci_low:+.1f} to {c.ci_high:+.1f}"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def rich_table(result: RegressResult):
    from rich.table import Table

    title = "REGRESSION" if result.regressed else "no regression"
    table = Table(title=f"pspo-eval regress: {title} (drop > {result.max_drop:g} pts and McNemar p < {result.alpha:g})")
    for col in ("model", "vs", "dataset", "n", "baseline %", "run %", "Δ pts (95% CI)", "only run ✓", "only base ✓",
                "p", "verdict"):
        table.add_column(col, justify="left" if col in {"model", "vs", "dataset", "verdict"} else "right")
    for c in result.checks:
        style = "bold red" if c.status == REGRESSION else ("green" if c.status == IMPROVED else None)
        table.add_row(c.model, c.baseline_model, dataset_title(c.dataset), str(c.n), f"{100 * c.baseline_accuracy:.1f}",
                      f"{100 * c.run_accuracy:.1f}", f"{-c.drop:+.1f} ({_ci(c)})", str(c.run_only), str(c.baseline_only),
                      _p(c.p_value), f"{c.status}: {c.reason}", style=style)
    return table


def markdown_summary(result: RegressResult) -> str:
    head = "❌ Regression" if result.regressed else "✅ No regression"
    lines = [f"## pspo-eval regress: {head}", "",
             f"Run `{result.run}` against baseline `{result.baseline}`. A regression is a drop of more than "
             f"{result.max_drop:g} percentage points that is significant on the paired problems (McNemar's exact "
             f"test, p < {result.alpha:g}).", "",
             "| Model | Baseline | Dataset | n | Baseline % | Run % | Δ pts (95% CI) | Only run ✓ | Only baseline ✓ | "
             "McNemar p | Verdict |",
             "|:--|:--|:--|--:|--:|--:|--:|--:|--:|--:|:--|"]
    for c in result.checks:
        lines.append(f"| {c.model} | {c.baseline_model} | {dataset_title(c.dataset)} | {c.n} | "
                     f"{100 * c.baseline_accuracy:.1f} | {100 * c.run_accuracy:.1f} | {-c.drop:+.1f} ({_ci(c)}) | "
                     f"{c.run_only} | {c.baseline_only} | {_p(c.p_value)} | {_MARK[c.status]}: {c.reason} |")
    notes = [f"{c.model} · {dataset_title(c.dataset)}: {n}" for c in result.checks for n in c.notes] + result.notes
    if notes:
        lines += ["", "Notes:", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def junit_xml(result: RegressResult) -> str:
    """One test case per (model, dataset); a regression is a ``failure``. Readable by any CI test viewer."""
    import xml.etree.ElementTree as ET

    failures = sum(c.status == REGRESSION for c in result.checks)
    suites = ET.Element("testsuites", name="pspo-eval regress", tests=str(len(result.checks)), failures=str(failures),
                        errors="0")
    suite = ET.SubElement(suites, "testsuite", name="pspo-eval regress", tests=str(len(result.checks)),
                          failures=str(failures), errors="0", skipped="0", time="0")
    props = ET.SubElement(suite, "properties")
    for name, value in (("run", result.run), ("baseline", result.baseline), ("max_drop", f"{result.max_drop:g}"),
                        ("alpha", f"{result.alpha:g}")):
        ET.SubElement(props, "property", name=name, value=value)
    for c in result.checks:
        case = ET.SubElement(suite, "testcase", classname=f"regress.{c.model}", name=c.dataset, time="0")
        detail = (f"{c.model} vs {c.baseline_model} on {dataset_title(c.dataset)}: n={c.n} paired problems, "
                  f"baseline {100 * c.baseline_accuracy:.1f}%, run {100 * c.run_accuracy:.1f}%, "
                  f"Δ {-c.drop:+.1f} pts (95% CI {_ci(c)}), McNemar p={_p(c.p_value)}; {c.reason}")
        if c.notes:
            detail += "; " + "; ".join(c.notes)
        if c.status == REGRESSION:
            failure = ET.SubElement(case, "failure", message=c.reason, type="regression")
            failure.text = detail
        ET.SubElement(case, "system-out").text = detail
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_outputs(result: RegressResult, out: Path, step_summary: str | None = None) -> list[Path]:
    """summary.md, junit.xml and regress.json under ``out``; append the summary to $GITHUB_STEP_SUMMARY."""
    from pspo_eval.store import atomic_write_json, atomic_write_text

    summary = markdown_summary(result)
    paths = [out / "summary.md", out / "junit.xml", out / "regress.json"]
    atomic_write_text(paths[0], summary)
    atomic_write_text(paths[1], junit_xml(result))
    atomic_write_json(paths[2], result.to_json())
    if step_summary:
        try:
            with open(step_summary, "a", encoding="utf-8") as fh:
                fh.write(summary + "\n")
        except OSError as exc:
            raise PspoError(f"cannot append to $GITHUB_STEP_SUMMARY ({step_summary}): {exc.strerror}") from exc
    return paths


def dumps(result: RegressResult) -> str:
    return json.dumps(result.to_json(), indent=2)
