"""Judge tables for the report, from :func:`pspo_eval.judge.aggregate.aggregate` over each run's judgments.

The aggregation (means with bootstrap CIs, flag rates, win/tie/loss, Bradley–Terry, agreement) is
the judge subsystem's; this module only lays it out: criterion × model means, flag rates, pairwise
results against the judged baseline with Bradley–Terry scores, agreement between judges, and the
count of every typed failure (a failure is counted, never scored).

Model labels are mapped to the report's display names (``base (run1)`` when a label occurs in
several runs), and judgments of several runs are shown side by side as separate row groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pspo_eval.report.load import Collection
from pspo_eval.report.tables import DASH, Cell, Table, num, pct

FAILURES = ("parse_error", "refusal", "truncated", "api_error")


@dataclass
class JudgeSection:
    tables: list[Table] = field(default_factory=list)
    judges: list[dict[str, Any]] = field(default_factory=list)  # provenance: judge, rubric, version, hash
    scores: list[dict[str, Any]] = field(default_factory=list)  # for the plot: model, criterion, mean, ci
    scales: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # (judge, rubric) -> score range
    frames: dict[str, Any] = field(default_factory=dict)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def judge_section(coll: Collection, *, n_boot: int = 2000, bt_boot: int = 500, seed: int = 0) -> JudgeSection | None:
    """All judge tables for the runs that hold judgments, or None when none does (one function per table)."""
    from pspo_eval.judge.aggregate import aggregate

    frame = _judgments(coll)
    if frame is None:
        return None
    agg = aggregate(frame, n_boot=n_boot, bt_boot=bt_boot, seed=seed)
    section = JudgeSection(frames=agg.tables())
    model_order = [m.name for m in coll.models]

    def models_of(df) -> list[str]:
        present = list(dict.fromkeys(df["model"]))
        return [m for m in model_order if m in present] + [m for m in present if m not in model_order]

    for column in ("rubric_version", "rubric_hash", "structured"):  # judgments written before these fields
        if column not in frame.columns:
            frame[column] = None
    section.judges = _judge_provenance(frame)
    section.scales = _scales(frame)
    for table in (_outcomes_table(agg), _scores_table(agg, models_of, section.scores), _flags_table(agg, models_of)):
        if table is not None:
            section.tables.append(table)
    # Pairwise, Bradley–Terry, length, panels.
    section.tables += _pairwise_tables(agg)
    section.tables += _panel_tables(agg)
    # Agreement between judges, of each judge with itself, with the gold judge; contradictions.
    section.tables += _agreement_tables(agg)
    section.tables += _gold_tables(coll, frame, n_boot=n_boot, seed=seed)
    section.tables += _contradiction_tables(agg)
    return section


def _judgments(coll: Collection) -> Any:
    """Every run's judgments in one frame, model labels mapped to the report's display names; None if none."""
    import pandas as pd

    from pspo_eval.judge.aggregate import load_judgments

    frames = []
    for index, run in enumerate(coll.runs):
        if not (run.path / "judgments").is_dir():
            continue
        frame = load_judgments(run.path)
        if frame.empty:
            continue
        names = {m.label: m.name for m in coll.models if m.run_index == index}
        frame = frame.copy()
        frame["model"] = frame["model"].map(lambda x, n=names: n.get(x, x))
        frame["baseline"] = frame["baseline"].map(lambda x, n=names: n.get(x, x) if isinstance(x, str) else None)
        frame["run"] = run.name
        frames.append(frame)
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True)


def _judge_provenance(frame: Any) -> list[dict[str, Any]]:
    """Every (judge, rubric, version, hash) seen, with its item count and structured-output modes."""
    judges = []
    keys = frame[["judge", "rubric", "rubric_version", "rubric_hash"]].astype(str)
    for (judge, rubric, version, rhash), group in frame.groupby([keys[c] for c in keys.columns], sort=True):
        judges.append({"judge": judge, "rubric": rubric, "rubric_version": version, "rubric_hash": rhash,
                       "items": int(len(group)),
                       "structured": sorted({s for s in group["structured"] if isinstance(s, str)})})
    return judges


def _scales(frame: Any) -> dict[tuple[str, str], tuple[int, int]]:
    """The score range of each (judge, rubric), from the first judgment that states one."""
    scales = {}
    for (judge, rubric), group in frame.groupby(["judge", "rubric"], sort=True):
        for scale in group["scale"]:
            if isinstance(scale, dict) and scale:
                scales[(judge, rubric)] = (min(v[0] for v in scale.values()), max(v[1] for v in scale.values()))
                break
    return scales


def _outcomes_table(agg: Any) -> Table | None:
    """Every typed failure counted."""
    outcomes = agg.outcomes
    if outcomes.empty:
        return None
    rows, records = [], []
    for r in _rows(outcomes):
        failures = sum(int(r[f]) for f in FAILURES)
        rows.append([Cell(str(r["judge"])), Cell(str(r["rubric"])), Cell(str(r["model"])), Cell(str(int(r["n"]))),
                     Cell(str(int(r["ok"])))] + [Cell(str(int(r[f])) if int(r[f]) else "0") for f in FAILURES]
                    + [Cell(str(failures), bold=failures > 0)])
        records.append({k: _clean(v) for k, v in r.items()} | {"failures": failures})
    return Table(
        "judge_outcomes", "Judge outcomes (typed failures)",
        ["Judge", "Rubric", "Model", "Items", "ok", "parse error", "refusal", "truncated", "API error", "Failures"],
        rows, "Every judged item ends in exactly one outcome; only ok items are scored.",
        align=["l", "l", "l"] + ["r"] * 7, records=records)


def _scores_table(agg: Any, models_of: Any, plotted: list[dict[str, Any]]) -> Table | None:
    """Criterion × model means; appends what the score plot shows to ``plotted``."""
    scores = agg.scores
    if scores.empty:
        return None
    models = models_of(scores)
    rows: list[list[Cell]]
    rows, groups, records = [], {}, []
    for (judge, rubric), block in scores.groupby(["judge", "rubric"], sort=True):
        groups[len(rows)] = f"{judge} · {rubric}"
        for criterion in list(dict.fromkeys(block["criterion"])):
            row = [Cell(str(criterion).replace("_", " "))]
            sub = block[block["criterion"] == criterion]
            best = sub["mean"].max()
            for model in models:
                hit = sub[sub["model"] == model]
                if hit.empty:
                    row.append(Cell(DASH))
                    continue
                h = hit.iloc[0]
                row.append(Cell(num(h["mean"]), f"{h['ci_low']:.2f}–{h['ci_high']:.2f}",
                                bold=len(models) > 1 and h["mean"] == best, title=f"n={int(h['n'])} items"))
                plotted.append({"judge": judge, "rubric": rubric, "criterion": criterion, "model": model,
                                "mean": float(h["mean"]), "ci_low": float(h["ci_low"]),
                                "ci_high": float(h["ci_high"]), "n": int(h["n"])})
            rows.append(row)
        records += _records(block)
    return Table(
        "judge_scores", "Judge scores: criterion × model", ["Criterion"] + models, rows,
        "Mean score over judged items (repeats averaged per item first) with a percentile-bootstrap 95% CI "
        "over items; best per criterion in bold.", groups=groups, records=records)


def _flags_table(agg: Any, models_of: Any) -> Table | None:
    """Flag rates per judge, rubric and model."""
    flags = agg.flags
    if flags.empty:
        return None
    models = models_of(flags)
    rows: list[list[Cell]]
    rows, groups, records = [], {}, []
    for (judge, rubric), block in flags.groupby(["judge", "rubric"], sort=True):
        groups[len(rows)] = f"{judge} · {rubric}"
        for flag in list(dict.fromkeys(block["flag"])):
            sub = block[block["flag"] == flag]
            source = sub.iloc[0]["source"]
            row = [Cell(str(flag).replace("_", " ") + (" (detector)" if source == "tool" else ""))]
            for model in models:
                hit = sub[sub["model"] == model]
                if hit.empty or not hit.iloc[0]["n"]:
                    row.append(Cell(DASH))
                    continue
                h = hit.iloc[0]
                row.append(Cell(pct(h["rate"]), f"{int(h['count'])}/{int(h['n'])}", shade=float(h["rate"])))
            rows.append(row)
        records += _records(block)
    return Table(
        "judge_flags", "Judge flags: rate among judged items (%)", ["Flag"] + models, rows,
        "Share of ok items the judge flagged (e.g. instruction leakage, verbosity); '(detector)' is the "
        "tool's own prompt-injection detector over all items.", groups=groups, records=records)


def _ci(low: Any, high: Any, *, percent: bool = False, signed: bool = False) -> str:
    """'0.12–0.34' (or percents) for an interval, '' when it is undefined."""
    if low is None or high is None or any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
        return ""
    if percent:
        return f"{100 * low:.1f}–{100 * high:.1f}"
    return f"{low:+.2f} to {high:+.2f}" if signed else f"{low:.2f}–{high:.2f}"


def _rows(frame: Any) -> list[dict[str, Any]]:
    """A frame's rows as dicts of plain Python values (the aggregation's frames are small)."""
    return frame.to_dict(orient="records")


def _records(frame: Any) -> list[dict[str, Any]]:
    """CSV records: a frame's rows with NaN as None."""
    return [{k: _clean(v) for k, v in r.items()} for r in _rows(frame)]


def _pairwise_tables(agg: Any) -> list[Table]:
    """Win/tie/flip rates with intervals and the length-controlled win rate; Bradley–Terry; length preference."""
    tables: list[Table] = []
    pairwise, bt = agg.pairwise, agg.bradley_terry
    if not pairwise.empty:
        rows = []
        for r in _rows(pairwise):
            hit = bt[(bt["judge"] == r["judge"]) & (bt["rubric"] == r["rubric"]) & (bt["criterion"] == r["criterion"])
                     & (bt["model"] == r["model"])] if not bt.empty else bt
            bt_text = Cell(DASH)
            if hit is not None and not hit.empty:
                h = hit.iloc[0]
                bt_text = Cell(f"{h['score']:+.2f}", _ci(h["ci_low"], h["ci_high"], signed=True))
            rows.append([Cell(str(r["judge"])), Cell(str(r["model"])), Cell(str(r["baseline"])),
                         Cell(str(r["criterion"]).replace("_", " ")), Cell(str(int(r["n"]))),
                         Cell(f"{int(r['wins'])}–{int(r['ties'])}–{int(r['losses'])}"),
                         Cell(pct(r["win_rate"]), _ci(r["win_low"], r["win_high"], percent=True), bold=r["win_rate"] > 0.5),
                         Cell(pct(r["lc_win_rate"]), _ci(r["lc_low"], r["lc_high"], percent=True),
                              title=f"length in {r['length_unit']}" if r["length_unit"] else None),
                         Cell(pct(r["tie_rate"]), _ci(r["tie_low"], r["tie_high"], percent=True)),
                         Cell(pct(r["flip_rate"]), _ci(r["flip_low"], r["flip_high"], percent=True)), bt_text])
        tables.append(Table(
            "judge_pairwise", "Pairwise judgments",
            ["Judge", "Model", "vs", "Criterion", "n", "W–T–L", "Win rate %", "LC win rate %", "Tie rate %",
             "Flip rate %", "Bradley–Terry"],
            rows, "Per item (a problem's pair), repeats combined by majority first. Win rate counts a tie as half a "
            "win; LC: the win rate a logistic model of the verdict on the length difference gives at equal length "
            "(docs/judging.md); a flip is a pair whose two presentation orders disagreed (counted as a tie). "
            "95% bootstrap intervals over problems. Bradley–Terry strength in log-odds, relative to the mean of "
            "the compared models.", align=["l", "l", "l", "l"] + ["r"] * 7, records=_records(pairwise)))
    if not bt.empty:
        tables.append(Table(
            "judge_bradley_terry", "Bradley–Terry scores", ["Judge", "Rubric", "Criterion", "Model", "Score", "95% CI",
                                                           "Comparisons"],
            [[Cell(str(r["judge"])), Cell(str(r["rubric"])), Cell(str(r["criterion"]).replace("_", " ")),
              Cell(str(r["model"])), Cell(f"{r['score']:+.2f}"), Cell(_ci(r["ci_low"], r["ci_high"], signed=True)),
              Cell(str(int(r["comparisons"])))] for r in _rows(bt)],
            "Log-odds strengths fitted to one outcome per compared pair of responses (ties count half; with "
            "--pairs all every model meets every other).", align=["l", "l", "l", "l", "r", "r", "r"],
            records=_records(bt)))
    lengths = agg.length_bias
    if not lengths.empty:
        tables.append(Table(
            "judge_length_bias", "Judge preference for the longer response",
            ["Judge", "Rubric", "Criterion", "Decisive verdicts", "Longer preferred %", "Length unit"],
            [[Cell(str(r["judge"])), Cell(str(r["rubric"])), Cell(str(r["criterion"]).replace("_", " ")),
              Cell(str(int(r["decisive"]))), Cell(pct(r["rate"]), _ci(r["ci_low"], r["ci_high"], percent=True),
                                                  shade=float(r["rate"])), Cell(str(r["length_unit"]))]
             for r in _rows(lengths)],
            "Among verdicts that chose a side between responses of different length: how often the longer one won "
            "(50% = no length preference), with a 95% bootstrap interval.", align=["l", "l", "l", "r", "r", "l"],
            records=_records(lengths)))
    return tables


def _panel_tables(agg: Any) -> list[Table]:
    panel = agg.panel
    if panel.empty:
        return []
    return [Table(
        "judge_panel", "Judge panels: how much the judges back the panel verdict",
        ["Panel", "Rubric", "Criterion", "Items", "Support %", "Unanimous %"],
        [[Cell(str(r["judge"])), Cell(str(r["rubric"])), Cell(str(r["criterion"]).replace("_", " ")),
          Cell(str(int(r["n_items"]))), Cell(pct(r["support"]), _ci(r["ci_low"], r["ci_high"], percent=True)),
          Cell(pct(r["unanimous"]))] for r in _rows(panel)],
        "The panel verdict is the majority of its judges (pairwise; a split is a tie) or their mean score; "
        "support is the mean share of its judges whose verdict equals it. The panel appears as one more judge in "
        "the score, pairwise and agreement tables.", align=["l", "l", "l", "r", "r", "r"], records=_records(panel))]


def _gold_tables(coll: Collection, frame: Any, *, n_boot: int, seed: int) -> list[Table]:
    """Agreement of every judge with the gold judge of each run whose manifest names one (``judge import --gold``)."""
    from pspo_eval.judge.gold import gold_agreement
    tables: list[Table] = []
    for run in coll.runs:
        gold = run.manifest.judge_gold
        rows = frame[frame["run"] == run.name] if "run" in frame.columns else frame
        if not gold or rows.empty or gold not in set(rows["judge"]):
            continue
        report = gold_agreement(rows, gold, n_boot=min(n_boot, 1000), seed=seed)
        keys = ["accuracy", "f1_macro", "kappa", "positional_agreement", "accuracy_order_mean"]
        cells = []
        for name, r in report["judges"].items():
            ci = r.get("ci", {})
            cells.append([Cell(name), Cell(str(r["n"])), Cell(str(r["failures"]))]
                         + [Cell(num(r.get(k), 3), _ci(*ci.get(k, [None, None]))) if r.get(k) is not None
                            else Cell(DASH) for k in keys])
        alpha_ci = report.get("alpha_ci") or [None, None]
        tables.append(Table(
            f"judge_gold_{len(tables)}", f"Agreement with {report['gold']} ({run.name}, {report['criterion']})",
            ["Judge", "n", "Failures", "Accuracy", "Macro F1", "Cohen κ", "Positional agreement",
             "Accuracy (mean of orders)"], cells,
            "On the items both judged, each item once with its combined verdict (orders that disagree make a tie). "
            f"Krippendorff's α over all raters: {num(report['alpha'])} ({_ci(*alpha_ci)}). 95% bootstrap "
            "intervals over items; failures are left out and counted.", align=["l"] + ["r"] * 7,
            records=[{"judge": n, **{k: v for k, v in r.items() if k != "ci"}} for n, r in report["judges"].items()]))
    return tables


def _agreement_tables(agg: Any) -> list[Table]:
    """Kappa and alpha between judges (with intervals), and each judge's agreement with itself over repeats."""
    tables: list[Table] = []
    agreement = agg.agreement
    if not agreement.empty:
        tables.append(Table(
            "judge_agreement", "Agreement between judges",
            ["Rubric", "Criterion", "Judges", "Items", "Cohen κ", "κ (quadratic)", "Krippendorff α"],
            [[Cell(str(r["rubric"])), Cell(str(r["criterion"]).replace("_", " ")), Cell(str(r["judges"])),
              Cell(str(int(r["n_items"]))), Cell(num(r["kappa"]), _ci(r["kappa_low"], r["kappa_high"])),
              Cell(num(r["kappa_quadratic"])), Cell(num(r["alpha"]), _ci(r["alpha_low"], r["alpha_high"]))]
             for r in _rows(agreement)],
            "Cohen's κ (unweighted and quadratic-weighted) per pair of judges and Krippendorff's α (ordinal), "
            "each item's repeats combined first (majority; scores: mean rounded to the scale), with 95% bootstrap "
            "intervals over items.", align=["l", "l", "l", "r", "r", "r", "r"],
            records=_records(agreement)))
    consistency = agg.self_consistency
    if not consistency.empty:
        tables.append(Table(
            "judge_self_consistency", "Judge self-consistency (repeats)",
            ["Judge", "Rubric", "Criterion", "Items", "Exact agreement %", "Mean SD", "Krippendorff α"],
            [[Cell(str(r["judge"])), Cell(str(r["rubric"])), Cell(str(r["criterion"]).replace("_", " ")),
              Cell(str(int(r["n_items"]))), Cell(pct(r["agreement"])), Cell(num(r["mean_std"])), Cell(num(r["alpha"]))]
             for r in _rows(consistency)],
            "Agreement of a judge with itself when asked the same item several times.",
            align=["l", "l", "l", "r", "r", "r", "r"],
            records=_records(consistency)))
    return tables


def _contradiction_tables(agg: Any) -> list[Table]:
    tables: list[Table] = []
    contradictions = agg.contradictions
    if not contradictions.empty:
        counts = contradictions.groupby(["judge", "rubric", "model", "kind"]).size().reset_index(name="items")
        tables.append(Table(
            "judge_contradictions", "Judge vs grader contradictions",
            ["Judge", "Rubric", "Model", "Kind", "Items"],
            [[Cell(str(r["judge"])), Cell(str(r["rubric"])), Cell(str(r["model"])), Cell(str(r["kind"])),
              Cell(str(int(r["items"])))] for r in _rows(counts)],
            "Items where the judge's soundness score contradicts the grader's verdict on the final answer "
            "(listed one by one in the CSV).", align=["l", "l", "l", "l", "r"],
            records=_records(contradictions)))
    return tables
