"""Reading judgments back from the run store, and aggregating them (``pspo-eval judge`` prints it; the report renders it).

:func:`load_judgments` returns one row per judged item (the final record when there is one, else
the latest ``api_error``). :func:`aggregate` turns those rows into plain tables:

- ``outcomes``: per judge × rubric × model, the count of every outcome (zeros included) — failures
  are counted, never scored;
- ``scores``: per judge × rubric × model × criterion, the mean over items (repeats averaged per item
  first) with a percentile-bootstrap 95% interval over items;
- ``flags``: the rate of each flag among ``ok`` items, plus the tool's own ``injection_attempt``
  detection over all items;
- ``pairwise``: win/tie/loss of each model against the baseline per criterion, with the
  position-flip rate (the share of ok pairs whose two orders disagreed, counted as ties);
- ``bradley_terry``: Bradley–Terry strengths (log-odds, mean 0) with bootstrap intervals, per criterion;
- ``agreement``: with several judges, per criterion: Cohen's kappa (unweighted and quadratic) for
  each pair of judges and Krippendorff's alpha (ordinal) over all of them;
- ``self_consistency``: with repeats, per judge and criterion (exact agreement, spread, alpha);
- ``contradictions``: items whose ``grader_check`` score (e.g. mathematical soundness) contradicts the
  grader: top quarter of the scale but the final answer is wrong, or bottom quarter but it is right.

All statistics come from :mod:`pspo_eval.stats`; every row can be traced back to its records
through ``(judge, rubric, model, dataset, problem_id)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import pandas as pd

from pspo_eval import stats
from pspo_eval.judge.records import FINAL_OUTCOMES, OUTCOMES
from pspo_eval.store import RunStore

_COLUMNS = ["key", "item_key", "judge", "rubric", "rubric_version", "mode", "model", "baseline", "dataset",
            "problem_id", "category", "repeat", "outcome", "scores", "flags", "flips", "correct", "grader_check",
            "scale", "injection_detected", "usage"]


def load_judgments(run_dir: str | Path, *, rubric: str | None = None, judges: list[str] | None = None) -> pd.DataFrame:
    """All judgments of a run as a DataFrame, one row per item (see the module docstring)."""
    store = RunStore(run_dir)
    best: dict[str, dict] = {}
    for shard in store.shards("judgments"):
        for record in shard.iter_dicts():
            item = record.get("item_key")
            if not item or "outcome" not in record:
                continue
            if rubric is not None and record.get("rubric") != rubric:
                continue
            if judges is not None and record.get("judge") not in judges:
                continue
            held = best.get(item)
            if held is None or (held["outcome"] not in FINAL_OUTCOMES and
                                (record["outcome"] in FINAL_OUTCOMES or record.get("created_at", "") >= held.get("created_at", ""))):
                best[item] = record
    if not best:
        return pd.DataFrame(columns=_COLUMNS)
    frame = pd.DataFrame(list(best.values()))
    for column in _COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    return frame.reset_index(drop=True)


@dataclass
class Aggregation:
    outcomes: pd.DataFrame = field(default_factory=pd.DataFrame)
    scores: pd.DataFrame = field(default_factory=pd.DataFrame)
    flags: pd.DataFrame = field(default_factory=pd.DataFrame)
    pairwise: pd.DataFrame = field(default_factory=pd.DataFrame)
    bradley_terry: pd.DataFrame = field(default_factory=pd.DataFrame)
    agreement: pd.DataFrame = field(default_factory=pd.DataFrame)
    self_consistency: pd.DataFrame = field(default_factory=pd.DataFrame)
    contradictions: pd.DataFrame = field(default_factory=pd.DataFrame)

    def tables(self) -> dict[str, pd.DataFrame]:
        return dict(self.__dict__)

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        """Plain data (lists of row dicts; NaN as None) for JSON output and the report."""
        out = {}
        for name, frame in self.tables().items():
            rows = frame.to_dict(orient="records") if not frame.empty else []
            out[name] = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
        return out


def _item_id(row: pd.Series) -> tuple:
    return (row["model"], row.get("baseline"), row["dataset"], row["problem_id"])


def aggregate(frame: pd.DataFrame, *, n_boot: int = 2000, bt_boot: int = 500, seed: int = 0,
              confidence: float = 0.95) -> Aggregation:
    """Aggregate a :func:`load_judgments` frame (see the module docstring)."""
    agg = Aggregation()
    if frame is None or frame.empty:
        agg.outcomes = pd.DataFrame(columns=["judge", "rubric", "model", "n", *OUTCOMES])
        return agg
    frame = frame.copy()
    frame["baseline"] = frame["baseline"].where(frame["baseline"].notna(), None)
    agg.outcomes = _outcomes(frame)
    ok = frame[frame["outcome"] == "ok"]
    absolute = ok[ok["mode"] != "pairwise"]
    pairwise = ok[ok["mode"] == "pairwise"]
    agg.scores = _scores(absolute, n_boot=n_boot, seed=seed, confidence=confidence)
    agg.flags = _flags(frame)
    agg.pairwise = _pairwise(pairwise)
    agg.bradley_terry = _bradley_terry(pairwise, n_boot=bt_boot, seed=seed, confidence=confidence)
    agg.agreement = _agreement(ok)
    agg.self_consistency = _self_consistency(frame)
    agg.contradictions = _contradictions(absolute)
    return agg


def _outcomes(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (judge, rubric, model), group in frame.groupby(["judge", "rubric", "model"], sort=True):
        counts = group["outcome"].value_counts()
        rows.append({"judge": judge, "rubric": rubric, "model": model, "n": len(group),
                     **{o: int(counts.get(o, 0)) for o in OUTCOMES}})
    return pd.DataFrame(rows, columns=["judge", "rubric", "model", "n", *OUTCOMES])


def _per_item_means(group: pd.DataFrame, column: str, key: str) -> list[float]:
    """Average the repeats of each item, then return one value per item."""
    per_item: dict[tuple, list[float]] = {}
    for _, row in group.iterrows():
        values = row[column]
        if isinstance(values, dict) and values.get(key) is not None:
            per_item.setdefault(_item_id(row), []).append(float(values[key]))
    return [sum(v) / len(v) for v in per_item.values()]


def _scores(ok: pd.DataFrame, *, n_boot: int, seed: int, confidence: float) -> pd.DataFrame:
    cols = ["judge", "rubric", "model", "criterion", "n", "mean", "ci_low", "ci_high"]
    rows = []
    for (judge, rubric, model), group in ok.groupby(["judge", "rubric", "model"], sort=True):
        criteria = _keys_in_order(group["scores"])
        for criterion in criteria:
            values = _per_item_means(group, "scores", criterion)
            if not values:
                continue
            mean, low, high = stats.mean_ci_bootstrap(values, confidence=confidence, n_boot=n_boot, seed=seed)
            rows.append({"judge": judge, "rubric": rubric, "model": model, "criterion": criterion,
                         "n": len(values), "mean": mean, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=cols)


def _keys_in_order(column: pd.Series) -> list[str]:
    keys: list[str] = []
    for value in column:
        if isinstance(value, dict):
            for k in value:
                if k not in keys:
                    keys.append(k)
    return keys


def _flags(frame: pd.DataFrame) -> pd.DataFrame:
    cols = ["judge", "rubric", "model", "flag", "source", "n", "count", "rate"]
    rows = []
    for (judge, rubric, model), group in frame.groupby(["judge", "rubric", "model"], sort=True):
        ok = group[group["outcome"] == "ok"]
        for flag in _keys_in_order(ok["flags"]):
            values = _per_item_means(ok, "flags", flag)
            if values:
                hits = sum(1 for v in values if v >= 0.5)
                rows.append({"judge": judge, "rubric": rubric, "model": model, "flag": flag, "source": "judge",
                             "n": len(values), "count": hits, "rate": hits / len(values)})
        items = {_item_id(r): bool(r.get("injection_detected")) for _, r in group.iterrows()}
        hits = sum(items.values())
        rows.append({"judge": judge, "rubric": rubric, "model": model, "flag": "injection_attempt", "source": "tool",
                     "n": len(items), "count": hits, "rate": hits / len(items) if items else float("nan")})
    return pd.DataFrame(rows, columns=cols)


def _pairwise(ok: pd.DataFrame) -> pd.DataFrame:
    cols = ["judge", "rubric", "model", "baseline", "criterion", "n", "wins", "ties", "losses", "win_rate",
            "flips", "flip_rate"]
    rows = []
    for (judge, rubric, model, baseline), group in ok.groupby(["judge", "rubric", "model", "baseline"], sort=True):
        for criterion in _keys_in_order(group["scores"]):
            outcomes, flips = [], 0
            for _, row in group.iterrows():
                value = (row["scores"] or {}).get(criterion)
                if value is None:
                    continue
                outcomes.append((value + 1) / 2)  # +1 -> 1 (win), 0 -> 0.5 (tie), -1 -> 0 (loss)
                flips += bool((row.get("flips") or {}).get(criterion))
            if not outcomes:
                continue
            wtl = stats.win_tie_loss(outcomes)
            rows.append({"judge": judge, "rubric": rubric, "model": model, "baseline": baseline,
                         "criterion": criterion, "n": wtl.n, "wins": wtl.wins, "ties": wtl.ties,
                         "losses": wtl.losses, "win_rate": wtl.win_rate, "flips": flips,
                         "flip_rate": flips / wtl.n})
    return pd.DataFrame(rows, columns=cols)


def _bradley_terry(ok: pd.DataFrame, *, n_boot: int, seed: int, confidence: float) -> pd.DataFrame:
    cols = ["judge", "rubric", "criterion", "model", "score", "ci_low", "ci_high", "comparisons"]
    rows = []
    for (judge, rubric), group in ok.groupby(["judge", "rubric"], sort=True):
        for criterion in _keys_in_order(group["scores"]):
            comparisons = []
            for _, row in group.iterrows():
                value = (row["scores"] or {}).get(criterion)
                if value is not None and row.get("baseline"):
                    comparisons.append((row["model"], row["baseline"], (value + 1) / 2))
            if not comparisons:
                continue
            fitted = stats.bradley_terry_ci(comparisons, n_boot=n_boot, seed=seed, confidence=confidence)
            counts: dict[str, int] = {}
            for a, b, _ in comparisons:
                counts[a] = counts.get(a, 0) + 1
                counts[b] = counts.get(b, 0) + 1
            for model, (score, low, high) in sorted(fitted.items(), key=lambda kv: -kv[1][0]):
                rows.append({"judge": judge, "rubric": rubric, "criterion": criterion, "model": model,
                             "score": score, "ci_low": low, "ci_high": high, "comparisons": counts.get(model, 0)})
    return pd.DataFrame(rows, columns=cols)


def _first_ok_value(group: pd.DataFrame, criterion: str) -> dict[tuple, Any]:
    """Per item, the criterion's value in the lowest-numbered ok repeat (agreement compares one rating per judge)."""
    out: dict[tuple, tuple[int, Any]] = {}
    for _, row in group.iterrows():
        value = (row["scores"] or {}).get(criterion) if isinstance(row["scores"], dict) else None
        if value is None:
            continue
        item = _item_id(row)
        rep = int(row.get("repeat") or 0)
        if item not in out or rep < out[item][0]:
            out[item] = (rep, value)
    return {k: v for k, (_, v) in out.items()}


def _labels(group: pd.DataFrame, criterion: str) -> list[int] | None:
    for value in group["scale"]:
        if isinstance(value, dict) and criterion in value:
            low, high = value[criterion]
            return list(range(int(low), int(high) + 1))
    if (group["mode"] == "pairwise").any():
        return [-1, 0, 1]
    return None


def _safe(fn, *args, **kwargs) -> float:
    try:
        return float(fn(*args, **kwargs))
    except stats.StatsInputError:
        return float("nan")


def _agreement(ok: pd.DataFrame) -> pd.DataFrame:
    cols = ["rubric", "criterion", "judges", "n_items", "kappa", "kappa_quadratic", "alpha"]
    rows = []
    for rubric, group in ok.groupby("rubric", sort=True):
        judges = sorted(group["judge"].unique())
        if len(judges) < 2:
            continue
        for criterion in _keys_in_order(group["scores"]):
            labels = _labels(group, criterion)
            ratings = {j: _first_ok_value(group[group["judge"] == j], criterion) for j in judges}
            for a, b in combinations(judges, 2):
                common = sorted(set(ratings[a]) & set(ratings[b]), key=str)
                if not common:
                    continue
                r1 = [ratings[a][i] for i in common]
                r2 = [ratings[b][i] for i in common]
                rows.append({"rubric": rubric, "criterion": criterion, "judges": f"{a} vs {b}", "n_items": len(common),
                             "kappa": _safe(stats.cohens_kappa, r1, r2, labels=labels),
                             "kappa_quadratic": _safe(stats.cohens_kappa, r1, r2, weights="quadratic", labels=labels),
                             "alpha": _safe(stats.krippendorff_alpha, [r1, r2], level="ordinal")})
            units = sorted(set().union(*[set(r) for r in ratings.values()]), key=str)
            matrix = [[ratings[j].get(u) for u in units] for j in judges]
            n_multi = sum(1 for u in units if sum(ratings[j].get(u) is not None for j in judges) >= 2)
            if len(judges) > 2 and n_multi:
                rows.append({"rubric": rubric, "criterion": criterion, "judges": f"all {len(judges)}",
                             "n_items": n_multi, "kappa": float("nan"), "kappa_quadratic": float("nan"),
                             "alpha": _safe(stats.krippendorff_alpha, matrix, level="ordinal")})
    return pd.DataFrame(rows, columns=cols)


def _self_consistency(frame: pd.DataFrame) -> pd.DataFrame:
    cols = ["judge", "rubric", "criterion", "n_items", "agreement", "mean_std", "alpha"]
    rows: list[dict[str, Any]] = []
    if frame["repeat"].fillna(0).astype(int).max() < 1:
        return pd.DataFrame(rows, columns=cols)
    for (judge, rubric), group in frame.groupby(["judge", "rubric"], sort=True):
        ok = group[group["outcome"] == "ok"]
        for criterion in _keys_in_order(ok["scores"]):
            per_item: dict[tuple, list[Any]] = {}
            for _, row in group.iterrows():
                scores = row["scores"] if isinstance(row["scores"], dict) else {}
                per_item.setdefault(_item_id(row), []).append(scores.get(criterion))
            try:
                sc = stats.self_consistency(list(per_item.values()), level="ordinal")
            except stats.StatsInputError:
                continue
            rows.append({"judge": judge, "rubric": rubric, "criterion": criterion, "n_items": sc.n_items,
                         "agreement": sc.pairwise_agreement, "mean_std": sc.mean_std, "alpha": sc.alpha})
    return pd.DataFrame(rows, columns=cols)


def _contradictions(ok: pd.DataFrame) -> pd.DataFrame:
    cols = ["judge", "rubric", "model", "dataset", "problem_id", "repeat", "criterion", "score", "correct", "kind"]
    rows = []
    for _, row in ok.iterrows():
        criterion = row.get("grader_check")
        scale = row.get("scale")
        correct = row.get("correct")
        if not criterion or not isinstance(scale, dict) or criterion not in scale or correct is None:
            continue
        if isinstance(correct, float) and math.isnan(correct):
            continue
        score = (row["scores"] or {}).get(criterion)
        if score is None:
            continue
        low, high = scale[criterion]
        span = high - low
        kind = None
        if not correct and score >= high - span / 4:
            kind = "judge: sound, grader: wrong answer"
        elif correct and score <= low + span / 4:
            kind = "judge: unsound, grader: right answer"
        if kind:
            rows.append({"judge": row["judge"], "rubric": row["rubric"], "model": row["model"],
                         "dataset": row["dataset"], "problem_id": row["problem_id"], "repeat": row.get("repeat"),
                         "criterion": criterion, "score": score, "correct": bool(correct), "kind": kind})
    return pd.DataFrame(rows, columns=cols)
