"""``pspo-eval judge agreement``: how far each judge agrees with a gold rater (people, usually).

For every other judge, on the items both it and the gold judged: n, accuracy, macro precision,
recall and F1 over the verdicts ({a, b, tie} for pairwise), Cohen's kappa, positional agreement
(the share of items judged in both orders whose two verdicts agree), and the accuracy of each order
alone (the mean of the two is LLMBar's "average accuracy"); the kappa matrix between all judges;
Krippendorff's alpha over all of them; each with a 95% bootstrap interval over items.

An item is matched across judges by (dataset, problem, the two models as a set), so a judge that
showed the models the other way round is still compared on the same item: its verdict is turned
to the same side first. An item judged in both orders counts once, with its combined verdict
(orders that disagree make a tie); repeats are combined by majority (scores: mean, rounded to the
scale). A failed verdict is left out and counted in ``failures``; with ``tie_failures`` a failed
pairwise verdict counts as a tie instead (some published protocols do that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, cast

import numpy as np
import pandas as pd

from pspo_eval.errors import PspoError
from pspo_eval.judge import agreement as ag
from pspo_eval.judge.panel import combine
from pspo_eval.judge.records import ORDER_NAMES, ORDER_PREFERENCE

PAIR_LABELS = (-1, 0, 1)


@dataclass
class RaterVerdicts:
    """One judge's verdicts on one criterion, keyed by the orientation-free item id."""

    verdicts: dict[tuple, int] = field(default_factory=dict)
    by_order: dict[tuple, list[int | None]] = field(default_factory=dict)  # pairwise: [order 0, order 1]
    failures: set[tuple] = field(default_factory=set)


def _item(row: Any) -> tuple[tuple, int]:
    """(orientation-free item id, +1 or -1: the sign that turns the row's verdict to the id's side)."""
    if isinstance(row.baseline, str) and row.baseline:
        low, high = sorted((row.model, row.baseline))
        return (row.dataset, str(row.problem_id), low, high), (1 if row.model == high else -1)
    return (row.dataset, str(row.problem_id), row.model, None), 1


def _order_verdicts(orders: Any, criterion: str, sign: int) -> list[int | None]:
    out: list[int | None] = [None, None]
    for entry in orders if isinstance(orders, list) else []:
        verdict = entry.get("verdict") if isinstance(entry, dict) else None
        if not isinstance(verdict, dict) or entry.get("order") not in ORDER_NAMES:
            continue
        index = ORDER_NAMES.index(entry["order"])
        choice = verdict.get(criterion)
        if (index, choice) in ORDER_PREFERENCE and isinstance(choice, str):  # every key's choice is a str
            out[index] = sign * ORDER_PREFERENCE[(index, choice)]
    return out


def rater_verdicts(rows: pd.DataFrame, criterion: str, *, tie_failures: bool = False) -> RaterVerdicts:
    """Combine one judge's rows (repeats, orders) into one verdict per item (see the module docstring)."""
    values: dict[tuple, list[float]] = {}
    orders: dict[tuple, list[list[int | None]]] = {}
    failed: set[tuple] = set()
    pairwise = False
    for row in rows.itertuples(index=False):
        item, sign = _item(row)
        pairwise = pairwise or row.mode == "pairwise"
        scores = row.scores if isinstance(row.scores, dict) else {}
        if row.outcome == "ok" and scores.get(criterion) is not None:
            values.setdefault(item, []).append(sign * scores[criterion])
            orders.setdefault(item, []).append(_order_verdicts(getattr(row, "orders", None), criterion, sign))
        elif row.outcome != "ok":
            failed.add(item)
    out = RaterVerdicts()
    for item, vs in values.items():
        out.verdicts[item] = int(cast(int, ag.majority([int(v) for v in vs]))) if pairwise else ag.round_half_up(sum(vs) / len(vs))
        per_order = orders[item]
        out.by_order[item] = [ag.majority([o[i] for o in per_order]) for i in (0, 1)]
    for item in failed - set(values):
        if tie_failures and pairwise:
            out.verdicts[item] = 0
        else:
            out.failures.add(item)
    return out


def _rater_name(judge: str, rubric: str, rubrics_of: dict[str, set[str]]) -> str:
    return judge if len(rubrics_of[judge]) == 1 else f"{judge} ({rubric})"


def collect(frame: pd.DataFrame, criterion: str, *, tie_failures: bool, panel: bool = True) -> dict[str, RaterVerdicts]:
    """Every rater's verdicts on ``criterion``, plus the panel of our own judges when there are two or more."""
    has = frame["scores"].map(lambda s: isinstance(s, dict) and criterion in s) | (frame["outcome"] != "ok")
    frame = frame[has]
    rubrics_of: dict[str, set[str]] = {}
    for judge, rubric in zip(frame["judge"], frame["rubric"], strict=True):
        rubrics_of.setdefault(judge, set()).add(rubric)
    raters = {}
    for (judge, rubric), rows in frame.groupby(["judge", "rubric"], sort=True):
        raters[_rater_name(judge, rubric, rubrics_of)] = rater_verdicts(rows, criterion, tie_failures=tie_failures)
    own = sorted({j for j, s in zip(frame["judge"], frame.get("source", pd.Series(index=frame.index, dtype=object)),
                                    strict=True) if (s if isinstance(s, str) else "judge") == "judge"})
    if panel and len(own) >= 2:
        members = [raters[n] for n in raters if n.split(" (")[0] in own]
        pairwise = bool((frame["mode"] == "pairwise").any())
        joined = RaterVerdicts()
        for item in set().union(*(m.verdicts for m in members)):
            combined = combine([m.verdicts.get(item) for m in members], pairwise=pairwise)
            if combined is not None:
                joined.verdicts[item] = int(combined[0]) if pairwise else ag.round_half_up(combined[0])
        raters[f"panel({'+'.join(own)})"] = joined
    return raters


def _labels(raters: dict[str, RaterVerdicts], pairwise: bool) -> list[int]:
    if pairwise:
        return list(PAIR_LABELS)
    return sorted({v for r in raters.values() for v in r.verdicts.values()})


def _versus_gold(gold: RaterVerdicts, judge: RaterVerdicts, labels: list[int], *, n_boot: int,
                 seed: int) -> dict[str, Any]:
    common = sorted(set(gold.verdicts) & set(judge.verdicts), key=str)
    failures = len(judge.failures & set(gold.verdicts))
    if not common:
        return {"n": 0, "failures": failures}
    g, p, size = ag.encode([gold.verdicts[i] for i in common], [judge.verdicts[i] for i in common], labels)
    orders = np.array([[np.nan if v is None else v for v in judge.by_order.get(i, [None, None])] for i in common])
    gold_values = np.array([gold.verdicts[i] for i in common], dtype=float)
    both = ~np.isnan(orders).any(axis=1)

    def stats_on(idx: np.ndarray) -> dict[str, float]:
        m = ag.confusion(g[idx], p[idx], size)
        precision, recall, f1 = ag.macro_scores(m)
        sel = both[idx]
        per_order = [orders[idx, k][~np.isnan(orders[idx, k])] == gold_values[idx][~np.isnan(orders[idx, k])]
                     for k in (0, 1)]
        return {"accuracy": float(np.trace(m) / m.sum()), "precision_macro": precision, "recall_macro": recall,
                "f1_macro": f1, "kappa": ag.kappa_from_confusion(m),
                "positional_agreement": float(np.mean(orders[idx][sel, 0] == orders[idx][sel, 1])) if sel.any()
                else float("nan"),
                "accuracy_order_mean": float(np.mean([a.mean() for a in per_order])) if all(a.size for a in per_order)
                else float("nan")}

    point = stats_on(np.arange(len(common)))
    cis = ag.bootstrap_cis(len(common), stats_on, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {"n": len(common), "failures": failures, **point, "n_both_orders": int(both.sum())}
    out["accuracy_by_order"] = {
        ORDER_NAMES[k]: float(np.mean(orders[~np.isnan(orders[:, k]), k] == gold_values[~np.isnan(orders[:, k])]))
        if (~np.isnan(orders[:, k])).any() else None for k in (0, 1)}
    out["ci"] = {k: list(v) for k, v in cis.items()}
    return out


def _matrix(raters: dict[str, RaterVerdicts], labels: list[int], *, n_boot: int, seed: int) -> dict[str, Any]:
    kappas: dict[str, float | None] = {}
    cis: dict[str, list[float]] = {}
    for a, b in combinations(sorted(raters), 2):
        common = sorted(set(raters[a].verdicts) & set(raters[b].verdicts), key=str)
        if not common:
            continue
        x, y, size = ag.encode([raters[a].verdicts[i] for i in common], [raters[b].verdicts[i] for i in common], labels)
        kappas[f"{a}|{b}"] = ag.kappa_from_confusion(ag.confusion(x, y, size))

        def kappa_on(idx: np.ndarray, x: np.ndarray = x, y: np.ndarray = y, size: int = size) -> dict[str, float]:
            return {"k": ag.kappa_from_confusion(ag.confusion(x[idx], y[idx], size))}

        ci = ag.bootstrap_cis(len(common), kappa_on, n_boot=n_boot, seed=seed)
        cis[f"{a}|{b}"] = list(ci.get("k", (float("nan"), float("nan"))))
    names = sorted(raters)
    units = sorted(set().union(*(r.verdicts for r in raters.values())), key=str)
    matrix = [[raters[n].verdicts.get(u) for u in units] for n in names]
    multi = [u for u, column in enumerate(zip(*matrix, strict=True)) if sum(v is not None for v in column) >= 2]
    alpha = ag.alpha_or_nan(matrix) if multi else float("nan")
    alpha_ci = ag.bootstrap_cis(len(multi), lambda idx: {"a": ag.alpha_or_nan(
        [[row[multi[i]] for i in idx] for row in matrix])}, n_boot=max(100, n_boot // 5), seed=seed).get(
        "a", (float("nan"), float("nan")))
    return {"kappa_matrix": kappas, "kappa_matrix_ci": cis, "alpha": alpha, "alpha_ci": list(alpha_ci),
            "alpha_n": len(multi)}


def gold_agreement(frame: pd.DataFrame, gold: str, *, criterion: str | None = None, tie_failures: bool = False,
                   n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The agreement report as plain data (the ``--json`` shape; fractions, not percents)."""
    if frame.empty or gold not in set(frame["judge"]):
        known = ", ".join(sorted(set(frame["judge"]))) if not frame.empty else "none"
        raise PspoError(f"gold judge {gold!r} has no judgments in this run", f"judges: {known}")
    gold_rows = frame[frame["judge"] == gold]
    if criterion is None:
        keys = list(dict.fromkeys(k for s in gold_rows["scores"] if isinstance(s, dict) for k in s))
        if not keys:
            raise PspoError(f"gold judge {gold!r} has no ok verdict", "import labels with a winner or a score")
        criterion = keys[0]
    raters = collect(frame, criterion, tie_failures=tie_failures)
    gold_name = next(n for n in raters if n == gold or n.startswith(f"{gold} ("))
    pairwise = bool((gold_rows["mode"] == "pairwise").any())
    labels = _labels(raters, pairwise)
    judges = {name: _versus_gold(raters[gold_name], r, labels, n_boot=n_boot, seed=seed)
              for name, r in raters.items() if name != gold_name}
    return _no_nan({"gold": gold_name, "criterion": criterion, "tie_failures": tie_failures,
                    "n_gold": len(raters[gold_name].verdicts), "gold_failures": len(raters[gold_name].failures),
                    "judges": judges, **_matrix(raters, labels, n_boot=n_boot, seed=seed)})


def _no_nan(value: Any) -> Any:
    """NaN (undefined: e.g. positional agreement of a rater who saw one order) as None, so the JSON is valid."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value
