"""Reading judgments back from the run store, and aggregating them (``pspo-eval judge`` prints it; the report renders it).

:func:`load_judgments` returns one row per judged item (the final record when there is one, else
the latest ``api_error``). :func:`aggregate` turns those rows into plain tables. First, every
item's repeats are combined (majority for pairwise, a split making a tie; mean for scores), so an
item counts once in every statistic and ``--repeats`` never narrows an interval; every interval is a
95% percentile bootstrap over items (problems).

- ``outcomes``: per judge × rubric × model, the count of every outcome (zeros included) — failures
  are counted, never scored;
- ``scores``: per judge × rubric × model × criterion, the mean over items with its interval;
- ``flags``: the rate of each flag among ``ok`` items, plus the tool's own ``injection_attempt``
  detection over all items;
- ``pairwise``: win/tie/loss per model pair and criterion, win rate (a tie counts half), tie rate and
  position-flip rate (the share of pairs whose two orders disagreed, counted as ties), each with an
  interval, and the length-controlled win rate (:func:`.agreement.length_controlled_win_rate`);
- ``bradley_terry``: Bradley–Terry strengths (log-odds, mean 0), per criterion, with intervals from
  a bootstrap over problems (all of a problem's comparisons together);
- ``length_bias``: per judge, how often its decisive verdicts chose the longer response;
- ``agreement``: with several judges, per criterion: Cohen's kappa (unweighted and quadratic) for
  each pair of judges and Krippendorff's alpha (ordinal) over all of them, with intervals;
- ``panel``: with several of our own judges, the support of their panel verdict (:mod:`.panel`); the
  panel itself appears as one more judge in the score, pairwise, Bradley–Terry and length tables;
- ``self_consistency``: with repeats, per judge and criterion (exact agreement, spread, alpha);
- ``contradictions``: items whose ``grader_check`` score (e.g. mathematical soundness) contradicts the
  grader: top quarter of the scale but the final answer is wrong, or bottom quarter but it is right.

Agreement with a gold rater (people) is :mod:`.gold`. Every row can be traced back to its records
through ``(judge, rubric, model, baseline, dataset, problem_id)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pspo_eval import stats
from pspo_eval.errors import PspoError
from pspo_eval.judge.agreement import (
    alpha_or_nan,
    bootstrap_cis,
    confusion,
    encode,
    kappa_from_confusion,
    length_controlled_win_rate,
    longer_preferred,
    majority,
    mean_ci,
    round_half_up,
)
from pspo_eval.judge.panel import PanelMethod, panel_rows, per_item
from pspo_eval.judge.records import FINAL_OUTCOMES, OUTCOMES, Judgment
from pspo_eval.store import RunStore

_COLUMNS = ["key", "item_key", "judge", "rubric", "rubric_version", "mode", "model", "baseline", "dataset",
            "problem_id", "category", "repeat", "outcome", "scores", "flags", "flips", "correct", "grader_check",
            "scale", "injection_detected", "usage", "orders", "source", "response_chars", "response_tokens",
            "baseline_chars", "baseline_tokens", "expected_scores"]


def read_judgments(run_dir: str | Path, *, rubric: str | None = None,
                   judges: list[str] | None = None) -> list[tuple[Judgment, dict[str, Any]]]:
    """One record per item, validated as a :class:`Judgment` (see the module docstring), with its stored fields.

    The second element holds the fields the stored line has, in its order (what :func:`load_judgments`
    puts in the frame), typed by the model. A line that is not a judgment at all (no ``item_key`` or
    ``outcome``) is skipped; one that is but fails the model is an error naming its file.
    """
    best: dict[str, tuple[Judgment, dict[str, Any]]] = {}
    for shard in RunStore(run_dir).shards("judgments"):
        for record in shard.iter_dicts():
            if not record.get("item_key") or "outcome" not in record:
                continue
            judgment = _validate(record, shard.path)
            if rubric is not None and judgment.rubric != rubric:
                continue
            if judges is not None and judgment.judge not in judges:
                continue
            held = best.get(judgment.item_key)
            if held is None or (held[0].outcome not in FINAL_OUTCOMES and (
                    judgment.outcome in FINAL_OUTCOMES or judgment.created_at >= held[0].created_at)):
                dumped = judgment.model_dump(exclude_unset=True)
                best[judgment.item_key] = (judgment, {k: dumped[k] for k in record})
    return list(best.values())


def _validate(record: dict[str, Any], path: Path) -> Judgment:
    from pydantic import ValidationError

    from pspo_eval.config import describe_validation_error

    try:
        return Judgment.model_validate(record)
    except ValidationError as exc:
        raise PspoError(f"{path}: judgment {record.get('key')!r} is not a valid record: "
                        f"{describe_validation_error(exc)}", "delete that line and rerun the command that wrote it") from None


def load_judgments(run_dir: str | Path, *, rubric: str | None = None, judges: list[str] | None = None) -> pd.DataFrame:
    """All judgments of a run as a DataFrame, one row per item (see the module docstring)."""
    rows = [fields for _, fields in read_judgments(run_dir, rubric=rubric, judges=judges)]
    if not rows:
        return pd.DataFrame(columns=_COLUMNS)
    frame = pd.DataFrame(rows)
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
    length_bias: pd.DataFrame = field(default_factory=pd.DataFrame)
    panel: pd.DataFrame = field(default_factory=pd.DataFrame)
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


def _item_id(row: dict[str, Any]) -> tuple:
    return (row["model"], row.get("baseline"), row["dataset"], row["problem_id"])


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame's rows as plain dicts (column -> value)."""
    return frame.to_dict(orient="records")


def aggregate(frame: pd.DataFrame, *, n_boot: int = 2000, bt_boot: int = 500, seed: int = 0,
              confidence: float = 0.95, panel: bool = True, panel_method: PanelMethod = "mean") -> Aggregation:
    """Aggregate a :func:`load_judgments` frame (see the module docstring).

    With ``panel`` and at least two of our own judges on a rubric, their panel (:mod:`.panel`) is
    added as one more judge to the score, pairwise, Bradley–Terry and length tables.
    """
    agg = Aggregation()
    if frame is None or frame.empty:
        agg.outcomes = pd.DataFrame(columns=["judge", "rubric", "model", "n", *OUTCOMES])
        return agg
    frame = frame.copy()
    frame["baseline"] = frame["baseline"].where(frame["baseline"].notna(), None)
    agg.outcomes = _outcomes(frame)
    ok = frame[frame["outcome"] == "ok"]
    agg.agreement = _agreement(ok, seed=seed)
    panels = panel_rows(frame, method=panel_method) if panel else pd.DataFrame()
    if not panels.empty:
        agg.panel = _panel_support(panels, n_boot=n_boot, seed=seed)
        ok = pd.concat([ok, panels], ignore_index=True)
    absolute = ok[ok["mode"] != "pairwise"]
    pairwise = ok[ok["mode"] == "pairwise"]
    agg.scores = _scores(absolute, n_boot=n_boot, seed=seed, confidence=confidence)
    agg.flags = _flags(frame)
    agg.pairwise = _pairwise(pairwise, n_boot=n_boot, seed=seed)
    agg.length_bias = _length_bias(pairwise, n_boot=n_boot, seed=seed)
    agg.bradley_terry = _bradley_terry(pairwise, n_boot=bt_boot, seed=seed, confidence=confidence)
    agg.self_consistency = _self_consistency(frame)
    agg.contradictions = _contradictions(absolute[absolute["source"].fillna("judge") != "panel"])
    return agg


def _panel_support(panels: pd.DataFrame, *, n_boot: int, seed: int) -> pd.DataFrame:
    """Per panel and criterion: the mean share of its judges that agree with its verdict, and unanimity."""
    cols = ["judge", "rubric", "criterion", "n_items", "support", "ci_low", "ci_high", "unanimous"]
    rows = []
    for (judge, rubric), group in panels.groupby(["judge", "rubric"], sort=True):
        for criterion in _keys_in_order(group["panel_support"]):
            shares = [s[criterion] for s in group["panel_support"] if isinstance(s, dict) and criterion in s]
            mean, low, high = mean_ci(shares, n_boot=n_boot, seed=seed)
            rows.append({"judge": judge, "rubric": rubric, "criterion": criterion, "n_items": len(shares),
                         "support": mean, "ci_low": low, "ci_high": high,
                         "unanimous": sum(1 for x in shares if x >= 1.0) / len(shares)})
    return pd.DataFrame(rows, columns=cols)


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
    for row in _rows(group):
        values = row[column]
        if isinstance(values, dict) and values.get(key) is not None:
            per_item.setdefault(_item_id(row), []).append(float(values[key]))
    return [sum(v) / len(v) for v in per_item.values()]


def _scores(ok: pd.DataFrame, *, n_boot: int, seed: int, confidence: float) -> pd.DataFrame:
    """Mean score per criterion with its interval; ``expected_mean`` averages the probability-weighted
    scores over the ``expected_n`` items that have them (endpoints with log-probabilities)."""
    cols = ["judge", "rubric", "model", "criterion", "n", "mean", "ci_low", "ci_high", "expected_n", "expected_mean"]
    rows = []
    for (judge, rubric, model), group in ok.groupby(["judge", "rubric", "model"], sort=True):
        criteria = _keys_in_order(group["scores"])
        for criterion in criteria:
            values = _per_item_means(group, "scores", criterion)
            if not values:
                continue
            mean, low, high = stats.mean_ci_bootstrap(values, confidence=confidence, n_boot=n_boot, seed=seed)
            expected = _per_item_means(group, "expected_scores", criterion) if "expected_scores" in group else []
            rows.append({"judge": judge, "rubric": rubric, "model": model, "criterion": criterion,
                         "n": len(values), "mean": mean, "ci_low": low, "ci_high": high, "expected_n": len(expected),
                         "expected_mean": sum(expected) / len(expected) if expected else float("nan")})
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
        items = {_item_id(r): bool(r.get("injection_detected")) for r in _rows(group)}
        hits = sum(items.values())
        rows.append({"judge": judge, "rubric": rubric, "model": model, "flag": "injection_attempt", "source": "tool",
                     "n": len(items), "count": hits, "rate": hits / len(items) if items else float("nan")})
    return pd.DataFrame(rows, columns=cols)


def _pair_items(group: pd.DataFrame, criterion: str) -> dict[tuple, dict[str, Any]]:
    """Per item: its repeats combined (majority verdict, flip share) and the two responses' lengths."""
    seen: dict[tuple, dict[str, Any]] = {}
    for row in group.itertuples(index=False):
        value = (row.scores or {}).get(criterion) if isinstance(row.scores, dict) else None
        if value is None:
            continue
        entry = seen.setdefault(_item_id(row._asdict()), {"values": [], "flips": [], "lengths": _lengths(row)})
        entry["values"].append(int(value))
        entry["flips"].append(bool((row.flips or {}).get(criterion)) if isinstance(row.flips, dict) else False)
    for entry in seen.values():
        entry["verdict"] = majority(entry["values"])
        entry["flip"] = sum(entry["flips"]) / len(entry["flips"])
    return seen


def _lengths(row: Any) -> dict[str, tuple[float | None, float | None]]:
    def number(name: str) -> float | None:
        value = getattr(row, name, None)
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    return {"tokens": (number("response_tokens"), number("baseline_tokens")),
            "chars": (number("response_chars"), number("baseline_chars"))}


def _length_unit(items: list[dict[str, Any]]) -> str | None:
    """Tokens when every item has both token counts, else characters when every item has both, else None."""
    for unit in ("tokens", "chars"):
        if items and all(None not in e["lengths"][unit] for e in items):
            return unit
    return None


_PAIR_COLS = ["judge", "rubric", "model", "baseline", "criterion", "n", "wins", "ties", "losses", "win_rate",
              "win_low", "win_high", "tie_rate", "tie_low", "tie_high", "flips", "flip_rate", "flip_low", "flip_high",
              "length_unit", "lc_win_rate", "lc_low", "lc_high"]


def _pairwise(ok: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Win/tie/loss per model pair on items (repeats combined first), with bootstrap intervals over problems."""
    rows = []
    for (judge, rubric, model, baseline), group in ok.groupby(["judge", "rubric", "model", "baseline"], sort=True):
        for criterion in _keys_in_order(group["scores"]):
            items = list(_pair_items(group, criterion).values())
            if not items:
                continue
            outcomes = [(e["verdict"] + 1) / 2 for e in items]  # +1 -> 1 (win), 0 -> 0.5 (tie), -1 -> 0 (loss)
            wtl = stats.win_tie_loss(outcomes)
            win = mean_ci(outcomes, n_boot=n_boot, seed=seed)
            tie = mean_ci([float(e["verdict"] == 0) for e in items], n_boot=n_boot, seed=seed)
            flip = mean_ci([e["flip"] for e in items], n_boot=n_boot, seed=seed)
            row = {"judge": judge, "rubric": rubric, "model": model, "baseline": baseline, "criterion": criterion,
                   "n": wtl.n, "wins": wtl.wins, "ties": wtl.ties, "losses": wtl.losses, "win_rate": wtl.win_rate,
                   "win_low": win[1], "win_high": win[2], "tie_rate": tie[0], "tie_low": tie[1], "tie_high": tie[2],
                   "flips": int(sum(e["flip"] >= 0.5 for e in items)), "flip_rate": flip[0], "flip_low": flip[1],
                   "flip_high": flip[2]}
            row.update(_length_controlled(items, outcomes, n_boot=n_boot, seed=seed))
            rows.append(row)
    return pd.DataFrame(rows, columns=_PAIR_COLS)


def _length_controlled(items: list[dict[str, Any]], outcomes: list[float], *, n_boot: int,
                       seed: int) -> dict[str, Any]:
    """The length-controlled win rate (docs/judging.md) with a bootstrap interval over problems."""
    unit = _length_unit(items)
    if unit is None:
        return {"length_unit": None, "lc_win_rate": float("nan"), "lc_low": float("nan"), "lc_high": float("nan")}
    diff = np.array([e["lengths"][unit][0] - e["lengths"][unit][1] for e in items])
    y = np.array(outcomes)
    fit = length_controlled_win_rate(outcomes, diff.tolist())  # the same values as y and diff, as Sequence[float]
    ci = bootstrap_cis(len(y), lambda idx: {"lc": length_controlled_win_rate(y[idx], diff[idx], sd=fit.sd).lc_win_rate},
                       n_boot=max(100, n_boot // 4), seed=seed).get("lc", (float("nan"), float("nan")))
    return {"length_unit": unit, "lc_win_rate": fit.lc_win_rate, "lc_low": ci[0], "lc_high": ci[1]}


def _length_bias(ok: pd.DataFrame, *, n_boot: int, seed: int) -> pd.DataFrame:
    """How often each judge picks the longer response among its decisive verdicts, over all its pairs."""
    cols = ["judge", "rubric", "criterion", "length_unit", "decisive", "longer_preferred", "rate", "ci_low", "ci_high"]
    rows = []
    for (judge, rubric), group in ok.groupby(["judge", "rubric"], sort=True):
        for criterion in _keys_in_order(group["scores"]):
            items = [e for _, g in group.groupby(["model", "baseline"]) for e in _pair_items(g, criterion).values()]
            unit = _length_unit(items)
            if unit is None:
                continue
            hits = longer_preferred([e["verdict"] for e in items], [e["lengths"][unit][0] for e in items],
                                    [e["lengths"][unit][1] for e in items])
            if not hits:
                continue
            rate, low, high = mean_ci(hits, n_boot=n_boot, seed=seed)
            rows.append({"judge": judge, "rubric": rubric, "criterion": criterion, "length_unit": unit,
                         "decisive": len(hits), "longer_preferred": int(sum(hits)), "rate": rate, "ci_low": low,
                         "ci_high": high})
    return pd.DataFrame(rows, columns=cols)


def _bradley_terry(ok: pd.DataFrame, *, n_boot: int, seed: int, confidence: float) -> pd.DataFrame:
    """Bradley–Terry strengths from one comparison per item (repeats combined by majority first)."""
    cols = ["judge", "rubric", "criterion", "model", "score", "ci_low", "ci_high", "comparisons"]
    rows = []
    for (judge, rubric), group in ok.groupby(["judge", "rubric"], sort=True):
        group = group[group["baseline"].map(lambda b: isinstance(b, str) and bool(b))]
        for criterion in _keys_in_order(group["scores"]):
            by_problem: dict[tuple, list[tuple[str, str, float]]] = {}
            for _, g in group.groupby(["model", "baseline"]):
                for item, e in _pair_items(g, criterion).items():
                    by_problem.setdefault((item[2], item[3]), []).append((item[0], item[1], (e["verdict"] + 1) / 2))
            if not by_problem:
                continue
            fitted = _bt_by_problem(by_problem, n_boot=n_boot, seed=seed, confidence=confidence)
            counts: dict[str, int] = {}
            for a, b, _ in (c for cs in by_problem.values() for c in cs):
                counts[a] = counts.get(a, 0) + 1
                counts[b] = counts.get(b, 0) + 1
            for model, (score, low, high) in sorted(fitted.items(), key=lambda kv: -kv[1][0]):
                rows.append({"judge": judge, "rubric": rubric, "criterion": criterion, "model": model,
                             "score": score, "ci_low": low, "ci_high": high, "comparisons": counts.get(model, 0)})
    return pd.DataFrame(rows, columns=cols)


def _bt_by_problem(by_problem: dict[tuple, list[tuple[str, str, float]]], *, n_boot: int, seed: int,
                   confidence: float) -> dict[str, tuple[float, float, float]]:
    """Bradley–Terry scores with a cluster bootstrap over problems: {model: (score, low, high)}.

    With ``--pairs all`` one problem yields a comparison for every pair of models, and those share
    the problem's difficulty; resampling whole problems (not single comparisons, as
    :func:`pspo_eval.stats.bradley_terry_ci` does) keeps the interval honest. A model absent from a
    resample is left out of that replicate.
    """
    problems = list(by_problem.values())
    point = stats.bradley_terry([c for cs in problems for c in cs])
    rng = np.random.default_rng(seed)
    replicates: dict[str, list[float]] = {name: [] for name in point}
    for _ in range(n_boot):
        drawn = [c for i in rng.integers(0, len(problems), len(problems)) for c in problems[i]]
        for name, value in stats.bradley_terry(drawn).items():
            replicates[name].append(value)
    tail = (1.0 - confidence) / 2.0
    out = {}
    for name, score in point.items():
        values = replicates[name]
        low, high = np.quantile(values, [tail, 1.0 - tail]) if len(values) >= 10 else (float("nan"), float("nan"))
        out[name] = (score, float(low), float(high))
    return out


def _combined_value(group: pd.DataFrame, criterion: str) -> dict[tuple, Any]:
    """Per item, the judge's repeats combined: majority for pairwise, mean rounded to the scale for scores."""
    pairwise = bool((group["mode"] == "pairwise").all())
    return {item: int(v) if pairwise else round_half_up(v)
            for item, v in per_item(group, criterion, pairwise=pairwise).items()}


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


_AGREEMENT_COLS = ["rubric", "criterion", "judges", "n_items", "kappa", "kappa_low", "kappa_high", "kappa_quadratic",
                   "alpha", "alpha_low", "alpha_high"]


def _pair_agreement(r1: list, r2: list, labels: list | None, *, n_boot: int, seed: int) -> dict[str, float]:
    x, y = np.array(r1, dtype=object), np.array(r2, dtype=object)
    cats = labels or sorted(set(r1) | set(r2))
    gx, gy, size = encode(r1, r2, cats)

    def on(idx: np.ndarray) -> dict[str, float]:  # kappa by counting codes: the bootstrap refits it 200 times
        return {"kappa": kappa_from_confusion(confusion(gx[idx], gy[idx], size)),
                "alpha": _safe(stats.krippendorff_alpha, [list(x[idx]), list(y[idx])], level="ordinal")}

    point = on(np.arange(len(r1)))
    ci = bootstrap_cis(len(r1), on, n_boot=n_boot, seed=seed)
    nan = (float("nan"), float("nan"))
    return {"kappa": point["kappa"], "kappa_low": ci.get("kappa", nan)[0], "kappa_high": ci.get("kappa", nan)[1],
            "kappa_quadratic": _safe(stats.cohens_kappa, r1, r2, weights="quadratic", labels=labels),
            "alpha": point["alpha"], "alpha_low": ci.get("alpha", nan)[0], "alpha_high": ci.get("alpha", nan)[1]}


def _alpha_ci(matrix: list[list[Any]], units: list[int], *, n_boot: int, seed: int) -> tuple[float, float]:
    """Bootstrap interval of alpha over the units (columns of the raters × units matrix) listed."""
    def on(idx: np.ndarray) -> dict[str, float]:
        return {"a": alpha_or_nan([[row[units[i]] for i in idx] for row in matrix])}

    return bootstrap_cis(len(units), on, n_boot=n_boot, seed=seed).get("a", (float("nan"), float("nan")))


def _agreement(ok: pd.DataFrame, *, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Kappa and alpha between every pair of judges (and alpha over all), items' repeats combined, with CIs."""
    rows = []
    for rubric, group in ok.groupby("rubric", sort=True):
        judges = sorted(group["judge"].unique())
        if len(judges) < 2:
            continue
        for criterion in _keys_in_order(group["scores"]):
            labels = _labels(group, criterion)
            ratings = {j: _combined_value(group[group["judge"] == j], criterion) for j in judges}
            for a, b in combinations(judges, 2):
                common = sorted(set(ratings[a]) & set(ratings[b]), key=str)
                if not common:
                    continue
                r1 = [ratings[a][i] for i in common]
                r2 = [ratings[b][i] for i in common]
                rows.append({"rubric": rubric, "criterion": criterion, "judges": f"{a} vs {b}", "n_items": len(common),
                             **_pair_agreement(r1, r2, labels, n_boot=n_boot, seed=seed)})
            units = sorted(set().union(*[set(r) for r in ratings.values()]), key=str)
            matrix = [[ratings[j].get(u) for u in units] for j in judges]
            multi = [i for i, u in enumerate(units) if sum(ratings[j].get(u) is not None for j in judges) >= 2]
            if len(judges) > 2 and multi:
                ci = _alpha_ci(matrix, multi, n_boot=n_boot, seed=seed)
                rows.append({"rubric": rubric, "criterion": criterion, "judges": f"all {len(judges)}",
                             "n_items": len(multi), "kappa": float("nan"), "kappa_low": float("nan"),
                             "kappa_high": float("nan"), "kappa_quadratic": float("nan"),
                             "alpha": _safe(stats.krippendorff_alpha, matrix, level="ordinal"),
                             "alpha_low": ci[0], "alpha_high": ci[1]})
    return pd.DataFrame(rows, columns=_AGREEMENT_COLS)


def _self_consistency(frame: pd.DataFrame) -> pd.DataFrame:
    cols = ["judge", "rubric", "criterion", "n_items", "agreement", "mean_std", "alpha"]
    rows: list[dict[str, Any]] = []
    if frame["repeat"].fillna(0).astype(int).max() < 1:
        return pd.DataFrame(rows, columns=cols)
    for (judge, rubric), group in frame.groupby(["judge", "rubric"], sort=True):
        ok = group[group["outcome"] == "ok"]
        for criterion in _keys_in_order(ok["scores"]):
            per_item: dict[tuple, list[Any]] = {}
            for row in _rows(group):
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
    for row in _rows(ok):
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
