"""Panels: one combined verdict from several judges, with the agreement that backs it.

Each judge's repeats of an item are combined first (majority for pairwise, mean for scores); then
the panel verdict of the item is the majority of the judges' verdicts (pairwise; a split is a tie)
or their mean or median (scores). Its ``support`` is the share of the panel's judges whose verdict
equals the panel's (scores: after rounding both to the nearest scale point), so a 2-1 pairwise
majority has support 2/3 and a unanimous panel 1.

Why rows in the judgment frame: a panel is then aggregated like any judge (win rate, scores,
agreement with a gold judge, intervals), and reported next to each of its judges.
"""

from __future__ import annotations

import statistics as pystats
from collections.abc import Sequence
from typing import Any, Literal

import pandas as pd

from pspo_eval.judge.agreement import majority, round_half_up

PanelMethod = Literal["mean", "median"]


def combine(values: Sequence[float | None], *, pairwise: bool, method: PanelMethod = "mean") -> tuple[float, float] | None:
    """(panel verdict, support) from one verdict per judge; None with fewer than two verdicts."""
    present = [v for v in values if v is not None]
    if len(present) < 2:
        return None
    if pairwise:
        verdict: float = float(majority([int(v) for v in present]))  # type: ignore[arg-type]
        support = sum(1 for v in present if v == verdict) / len(present)
    else:
        verdict = float(pystats.median(present) if method == "median" else sum(present) / len(present))
        support = sum(1 for v in present if round_half_up(v) == round_half_up(verdict)) / len(present)
    return verdict, support


def per_item(group: pd.DataFrame, criterion: str, *, pairwise: bool) -> dict[tuple, float]:
    """One judge's verdict per item: its repeats combined (majority for pairwise, mean for scores)."""
    seen: dict[tuple, list[float]] = {}
    for row in group.itertuples(index=False):
        scores = row.scores if isinstance(row.scores, dict) else {}
        if row.outcome == "ok" and scores.get(criterion) is not None:
            seen.setdefault((row.model, row.baseline, row.dataset, row.problem_id), []).append(scores[criterion])
    if pairwise:
        return {k: float(majority([int(x) for x in v])) for k, v in seen.items()}  # type: ignore[arg-type]
    return {k: sum(v) / len(v) for k, v in seen.items()}


def panel_rows(frame: pd.DataFrame, *, method: PanelMethod = "mean") -> pd.DataFrame:
    """Synthetic ``ok`` rows for the panel of each rubric that at least two of our own judges used.

    Imported verdicts (human labels, other tools) never sit on a panel: they are what a panel is
    checked against. The panel's judge name lists its members: ``panel(a+b)``.
    """
    own = frame[(frame["outcome"] == "ok") & (frame.get("source", pd.Series("judge", index=frame.index))
                                                .fillna("judge") == "judge")]
    rows: list[dict[str, Any]] = []
    for rubric, group in own.groupby("rubric", sort=True):
        judges = sorted(group["judge"].unique())
        if len(judges) < 2:
            continue
        name = f"panel({'+'.join(judges)})"
        pairwise = bool((group["mode"] == "pairwise").all())
        criteria = list(dict.fromkeys(k for s in group["scores"] if isinstance(s, dict) for k in s))
        first = {(r.model, r.baseline, r.dataset, r.problem_id): r for r in group.itertuples(index=False)}
        votes = {c: {j: per_item(group[group["judge"] == j], c, pairwise=pairwise) for j in judges} for c in criteria}
        items = sorted(first, key=str)
        for item in items:
            scores, support = {}, {}
            for c in criteria:
                combined = combine([votes[c][j].get(item) for j in judges], pairwise=pairwise, method=method)
                if combined is not None:
                    scores[c] = int(combined[0]) if pairwise else combined[0]
                    support[c] = combined[1]
            if not scores:
                continue
            r = first[item]
            rows.append({
                "key": f"{name}|{item}", "item_key": f"{name}|{item}", "judge": name, "rubric": rubric,
                "rubric_version": r.rubric_version, "mode": r.mode, "model": r.model, "baseline": r.baseline,
                "dataset": r.dataset, "problem_id": r.problem_id, "category": r.category, "repeat": 0,
                "outcome": "ok", "scores": scores, "flags": {}, "flips": None, "correct": r.correct,
                "grader_check": None, "scale": r.scale, "injection_detected": False, "usage": None,
                "source": "panel", "panel_support": support,
                **{k: getattr(r, k, None) for k in ("response_chars", "response_tokens", "baseline_chars",
                                                    "baseline_tokens")},
            })
    return pd.DataFrame(rows)
