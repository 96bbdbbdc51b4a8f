"""The report's tables, as plain data that every renderer (Markdown, LaTeX, HTML, CSV) prints its own way.

A :class:`Table` holds display cells (a main text, a smaller secondary text such as a CI, a bold
flag) and, separately, ``records``: the machine-readable rows written to CSV with unrounded values,
so that a reader can recompute or re-plot anything without parsing "45.2 (40.1–50.3)".

The builders here cover the evaluation records (Table 1 accuracy, sampling, the paired comparison
with the baseline, breakdowns). All statistics come from :mod:`pspo_eval.stats`, and per-group
metrics from :func:`pspo_eval.metrics.summarize_group`, so that the report and ``results.json``
agree by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pspo_eval.records import SampleVerdict
from pspo_eval.report.load import PAPER_DATASETS, Collection, ModelRef, dataset_title

if TYPE_CHECKING:
    from pspo_eval.metrics import GroupSummary

DASH = "—"


@dataclass
class Cell:
    """One displayed cell: ``text`` (e.g. "45.2"), ``sub`` (e.g. a CI, printed smaller), ``bold``."""

    text: str = ""
    sub: str = ""
    bold: bool = False
    title: str | None = None  # hover text in HTML (n, counts, method)
    shade: float | None = None  # 0..1: background intensity in HTML (heat-map style cells)


@dataclass
class Table:
    name: str  # file stem: tables/<name>.csv, tables/<name>.tex
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    align: list[str] = field(default_factory=list)  # "l" | "r" per column
    groups: dict[int, str] = field(default_factory=dict)  # row index -> group heading shown before it
    records: list[dict[str, Any]] = field(default_factory=list)  # CSV rows (raw values)

    def __post_init__(self) -> None:
        if not self.align:
            self.align = ["l"] + ["r"] * (len(self.columns) - 1)


def pct(x: float | None, digits: int = 1) -> str:
    return DASH if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def ci_text(low: float | None, high: float | None, scale: float = 100.0, digits: int = 1) -> str:
    if low is None or high is None:
        return ""
    return f"{scale * low:.{digits}f}–{scale * high:.{digits}f}"


def num(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    return f"{x:.{digits}f}"


def _summary(records: list[SampleVerdict]) -> GroupSummary:
    from pspo_eval.metrics import summarize_group

    return summarize_group(records)


def _ordered_models(coll: Collection) -> list[tuple[str | None, list[ModelRef]]]:
    """Models grouped by base model size (smallest first; unknown sizes last, in run order)."""
    sizes: dict[str | None, float] = {}
    for m in coll.models:
        sizes.setdefault(m.size, m.size_value if m.size_value is not None else math.inf)
    out = []
    for size in sorted(sizes, key=lambda s: sizes[s]):
        out.append((size, [m for m in coll.models if m.size == size]))
    return out


# --------------------------------------------------------------------------------------------------
# Table 1: greedy accuracy
# --------------------------------------------------------------------------------------------------


def greedy_summaries(coll: Collection) -> dict[tuple[tuple[int, str], str], GroupSummary]:
    """summarize_group of every model's greedy first samples per dataset (absent: no T = 0 setting)."""
    out = {}
    for m in coll.models:
        for d in coll.datasets():
            recs = coll.greedy(m, d)
            if recs:
                out[(m.key, d)] = _summary(recs)
    return out


def accuracy_table(coll: Collection, summaries: dict | None = None) -> Table:
    """Table 1: greedy pass@1 (%) with Wilson 95% CIs; best per column in bold; average of the paper's four."""
    summaries = summaries if summaries is not None else greedy_summaries(coll)
    datasets = coll.datasets()
    paper = [d for d in PAPER_DATASETS if d in datasets]
    with_avg = len(paper) >= 2
    grouped = _ordered_models(coll)
    ordered = [m for _, ms in grouped for m in ms]

    def avg(m: ModelRef) -> float | None:
        values = [summaries[(m.key, d)].accuracy for d in paper if (m.key, d) in summaries]
        return sum(values) / len(values) if values and len(values) == len(paper) else None

    # Bold marks the best of several values in a column (ties all bold); a lone value is not "best".
    best: dict[str, float] = {}
    for d in datasets:
        values = [summaries[(m.key, d)].accuracy for m in ordered if (m.key, d) in summaries]
        if len(values) > 1:
            best[d] = max(values)
    averages = {m.key: avg(m) for m in ordered}
    present = [v for v in averages.values() if v is not None]
    if with_avg and len(present) > 1:
        best["avg"] = max(present)

    ns = {d: {summaries[(m.key, d)].problems for m in ordered if (m.key, d) in summaries} for d in datasets}
    columns = ["Model"]
    for d in datasets:
        columns.append(f"{dataset_title(d)} (n={next(iter(ns[d]))})" if len(ns[d]) == 1 else dataset_title(d))
    if with_avg:
        columns.append("Avg.")
    rows: list[list[Cell]] = []
    groups: dict[int, str] = {}
    records: list[dict[str, Any]] = []
    show_groups = any(size for size, _ in grouped)
    for size, members in grouped:
        if show_groups:
            groups[len(rows)] = f"{size} parameters" if size else "size unknown"
        for m in members:
            row = [Cell(m.name, title=m.model_id or None)]
            for d in datasets:
                s = summaries.get((m.key, d))
                if s is None:
                    has_group = any(k[0] == m.key and k[1] == d for k in coll.groups)
                    why = "no greedy (T=0) setting for this model" if has_group else "not evaluated"
                    row.append(Cell(DASH, title=why))
                    continue
                low, high = s.ci95
                sub = ci_text(low, high)
                if len(ns[d]) > 1:
                    sub += f" · n={s.problems}"
                row.append(Cell(pct(s.accuracy), sub, bold=s.accuracy == best.get(d),
                                title=f"{s.correct}/{s.problems} correct, Wilson 95% CI"))
                records.append({"run": m.run_name, "model": m.name, "label": m.label, "size": m.size,
                                "dataset": d, "setting": s.setting, "n": s.problems, "correct": s.correct,
                                "accuracy": s.accuracy, "ci_low": low, "ci_high": high,
                                "ci_method": s.ci_method, "best": s.accuracy == best.get(d)})
            if with_avg:
                a = averages[m.key]
                row.append(Cell(pct(a), bold=a is not None and a == best.get("avg"),
                                title="unweighted mean of the four datasets" if a is not None
                                else "needs all four datasets at T=0"))
                if a is not None:
                    records.append({"run": m.run_name, "model": m.name, "label": m.label, "size": m.size,
                                    "dataset": "average", "setting": None, "n": None, "correct": None,
                                    "accuracy": a, "ci_low": None, "ci_high": None, "ci_method": None,
                                    "best": a == best.get("avg")})
            rows.append(row)
    caption = ("Greedy pass@1 (%): accuracy of the first sample at temperature 0, with a Wilson 95% "
               "interval. Best per column in bold. — means the model has no greedy setting for that "
               "dataset.")
    if with_avg:
        caption += f" Avg. is the unweighted mean over {', '.join(dataset_title(d) for d in paper)}."
    return Table("accuracy", "Table 1: accuracy (greedy pass@1, %)", columns, rows, caption,
                 groups=groups, records=records)


# --------------------------------------------------------------------------------------------------
# Sampling: accuracy and pass@k versus temperature
# --------------------------------------------------------------------------------------------------


def sampling_summaries(coll: Collection) -> list[tuple[ModelRef, str, float, GroupSummary]]:
    out = []
    for m in coll.models:
        for d in coll.datasets():
            for t in coll.temperatures():
                g = coll.group(m, d, t)
                if g is not None:
                    out.append((m, d, t, _summary(g.records)))
    return out


def _powers(limit: int) -> list[int]:
    ks, k = [], 1
    while k <= limit:
        ks.append(k)
        k *= 2
    return ks


def sampling_table(rows_in: list[tuple[ModelRef, str, float, GroupSummary]]) -> Table:
    """Per dataset (row groups), model and temperature: accuracy with CI, pass@k, maj@k, mean length, truncation."""
    kmax = max((s.samples_per_problem for *_, s in rows_in), default=1)
    ks = _powers(kmax)[1:]
    columns = ["Model", "T", "n × k", "Accuracy %"]
    columns += [f"pass@{k} %" for k in ks]
    if ks:
        columns.append(f"maj@{ks[-1]} %")
    columns += ["Mean tokens", "Truncated %"]
    rows: list[list[Cell]] = []
    records: list[dict[str, Any]] = []
    groups: dict[int, str] = {}
    datasets = list(dict.fromkeys(d for _, d, _, _ in rows_in))
    for dataset in datasets:
        groups[len(rows)] = dataset_title(dataset)
        for m, d, t, s in rows_in:
            if d != dataset:
                continue
            low, high = s.ci95
            row = [Cell(m.name), Cell(f"{t:g}"), Cell(f"{s.problems} × {s.samples_per_problem}"),
                   Cell(pct(s.accuracy), ci_text(low, high), title=f"95% CI: {s.ci_method}")]
            for k in ks:
                row.append(Cell(pct(s.pass_at_k.get(str(k)))))
            if ks:
                row.append(Cell(pct(s.maj_at_k.get(str(ks[-1])))))
            row += [Cell(f"{s.mean_completion_tokens:.1f}"), Cell(pct(s.truncation_rate))]
            rows.append(row)
            records.append({"run": m.run_name, "model": m.name, "dataset": d, "temperature": t,
                            "setting": s.setting, "problems": s.problems,
                            "samples_per_problem": s.samples_per_problem, "samples": s.samples,
                            "accuracy": s.accuracy, "ci_low": low, "ci_high": high, "ci_method": s.ci_method,
                            **{f"pass@{k}": v for k, v in s.pass_at_k.items()},
                            **{f"maj@{k}": v for k, v in s.maj_at_k.items()},
                            "mean_completion_tokens": s.mean_completion_tokens,
                            "truncation_rate": s.truncation_rate})
    caption = ("Accuracy over all samples (95% CI: Wilson with one sample per problem, else a bootstrap "
               "over problems), unbiased pass@k, majority-vote maj@k (— where fewer samples were drawn), "
               "mean response length in tokens and the share of responses cut at the token budget.")
    return Table("sampling", "Sampling: accuracy and pass@k versus temperature", columns, rows, caption,
                 groups=groups, records=records)


# --------------------------------------------------------------------------------------------------
# Paired comparison with the baseline
# --------------------------------------------------------------------------------------------------


@dataclass
class Paired:
    """Two models' greedy verdicts on the problems both answered."""

    n: int
    acc_a: float
    acc_b: float
    diff: float  # a - b, fraction
    ci: tuple[float, float]
    a_only: int  # a right, b wrong
    b_only: int
    p_value: float


def paired_comparison(a: dict[str, bool], b: dict[str, bool], *, n_boot: int = 2000, seed: int = 0) -> Paired | None:
    """Accuracy difference a − b on the shared problems: paired bootstrap CI and McNemar's exact test."""
    from pspo_eval.stats import mcnemar_from_pairs, paired_bootstrap_diff

    common = sorted(set(a) & set(b))
    if not common:
        return None
    xa = [bool(a[p]) for p in common]
    xb = [bool(b[p]) for p in common]
    diff, low, high = paired_bootstrap_diff([float(v) for v in xa], [float(v) for v in xb], n_boot=n_boot, seed=seed)
    a_only, b_only, p = mcnemar_from_pairs(xa, xb)
    return Paired(len(common), sum(xa) / len(common), sum(xb) / len(common), diff, (low, high), a_only, b_only, p)


def verdicts(records: list[SampleVerdict]) -> dict[str, bool]:
    return {r.problem_id: r.correct for r in records}


def comparison_table(coll: Collection, baseline: ModelRef, *, n_boot: int = 2000, seed: int = 0,
                     alpha: float = 0.05) -> Table:
    columns = ["Model", "Dataset", "n paired", "Model %", "Baseline %", "Δ pts (95% CI)", "Only model right",
               "Only baseline right", "McNemar p"]
    rows: list[list[Cell]] = []
    records: list[dict[str, Any]] = []
    for m in coll.models:
        if m.key == baseline.key:
            continue
        for d in coll.datasets():
            mine, base = coll.greedy(m, d), coll.greedy(baseline, d)
            if mine is None and base is None:
                continue
            if not mine or not base:
                who = "model" if not mine else "baseline"
                rows.append([Cell(m.name), Cell(dataset_title(d)), Cell(DASH, title=f"the {who} has no greedy setting")]
                            + [Cell(DASH) for _ in columns[3:]])
                continue
            pair = paired_comparison(verdicts(mine), verdicts(base), n_boot=n_boot, seed=seed)
            if pair is None:
                rows.append([Cell(m.name), Cell(dataset_title(d)), Cell("0", title="no problem in common")]
                            + [Cell(DASH) for _ in columns[3:]])
                continue
            significant = pair.p_value < alpha
            sign = "+" if pair.diff > 0 else ""
            rows.append([
                Cell(m.name), Cell(dataset_title(d)), Cell(str(pair.n)), Cell(pct(pair.acc_a)), Cell(pct(pair.acc_b)),
                Cell(f"{sign}{100 * pair.diff:.1f}", f"{100 * pair.ci[0]:+.1f} to {100 * pair.ci[1]:+.1f}",
                     bold=significant, title="paired bootstrap over problems (2000 resamples)"),
                Cell(str(pair.a_only)), Cell(str(pair.b_only)),
                Cell(_p_text(pair.p_value), bold=significant, title="exact McNemar test on the discordant pairs"),
            ])
            records.append({"run": m.run_name, "model": m.name, "baseline": baseline.name, "dataset": d,
                            "n_paired": pair.n, "accuracy_model": pair.acc_a, "accuracy_baseline": pair.acc_b,
                            "diff": pair.diff, "ci_low": pair.ci[0], "ci_high": pair.ci[1],
                            "model_only_correct": pair.a_only, "baseline_only_correct": pair.b_only,
                            "mcnemar_p": pair.p_value, "significant": significant})
    caption = (f"Each model against the baseline ({baseline.name}) on the problems both answered greedily: "
               "difference in accuracy (percentage points) with a paired-bootstrap 95% CI, the discordant "
               f"pairs, and McNemar's exact test. Bold: p < {alpha:g}.")
    return Table("comparison", f"Comparison with the baseline ({baseline.name})", columns, rows, caption,
                 align=["l", "l"] + ["r"] * (len(columns) - 2), records=records)


def _p_text(p: float) -> str:
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


# --------------------------------------------------------------------------------------------------
# Breakdowns per category and level
# --------------------------------------------------------------------------------------------------


def _sort_key(value: str) -> tuple:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def breakdown_table(coll: Collection, summaries: dict) -> Table | None:
    """Greedy accuracy per category and per level of every dataset that has them; one column per model."""
    models = [m for _, ms in _ordered_models(coll) for m in ms]
    rows: list[list[Cell]] = []
    records: list[dict[str, Any]] = []
    groups: dict[int, str] = {}
    for d in coll.datasets():
        for field_name, label in (("by_category", "category"), ("by_level", "level")):
            values: set[str] = set()
            for m in models:
                s = summaries.get((m.key, d))
                if s:
                    values |= set(getattr(s, field_name))
            if not values:
                continue
            groups[len(rows)] = f"{dataset_title(d)} by {label}"
            for value in sorted(values, key=_sort_key):
                row = [Cell(value)]
                for m in models:
                    s = summaries.get((m.key, d))
                    cell = getattr(s, field_name).get(value) if s else None
                    if cell is None:
                        row.append(Cell(DASH))
                        continue
                    row.append(Cell(pct(cell.accuracy), f"n={cell.n}", shade=cell.accuracy))
                    records.append({"dataset": d, "by": label, "value": value, "run": m.run_name, "model": m.name,
                                    "n": cell.n, "accuracy": cell.accuracy})
                rows.append(row)
    if not rows:
        return None
    caption = "Greedy pass@1 (%) per category and per level (n: problems in the cell)."
    return Table("breakdown", "Breakdown by category and level", ["Group"] + [m.name for m in models], rows,
                 caption, groups=groups, records=records)


def crosstab(records: list[SampleVerdict], row_field: str = "category", col_field: str = "level") -> dict:
    """Counts of (row, column) cells: {(row, col): (correct, n)} — the MATH-500 subject × level heat map."""
    out: dict[tuple[str, str], list[int]] = {}
    for r in records:
        a, b = getattr(r, row_field), getattr(r, col_field)
        if a is None or b is None:
            continue
        cell = out.setdefault((str(a), str(b)), [0, 0])
        cell[0] += r.correct
        cell[1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def crosstab_records(coll: Collection, dataset: str = "math500") -> list[dict]:
    rows = []
    for m in coll.models:
        recs = coll.greedy(m, dataset)
        for (subject, level), (correct, n) in sorted(crosstab(recs or []).items()):
            rows.append({"run": m.run_name, "model": m.name, "dataset": dataset, "category": subject, "level": level,
                         "n": n, "correct": correct, "accuracy": correct / n})
    return rows
