"""Statistics for trusting a judge: agreement with a gold rater, bootstrap intervals, length bias, logprob scores.

Pure functions over plain values (verdict codes, lengths, log-probabilities); the frame-level
tables that use them live in :mod:`pspo_eval.judge.aggregate` and :mod:`pspo_eval.judge.gold`.

Conventions (docs/judging.md has the formulas):

- a pairwise verdict is coded from the candidate's side: +1 (candidate, "b", better), 0 (tie),
  -1 (baseline, "a", better); several verdicts of one item (repeats, or the judges of a panel) are
  combined by :func:`majority`, a split making a tie;
- every interval is a 95% percentile bootstrap over items (problems): whole items are resampled,
  so repeats and both orders of an item move together;
- macro precision, recall and F1 average over the labels that occur in the gold or the predicted
  verdicts (a class nobody used, e.g. ``tie`` in a set without ties, would add a meaningless 0),
  with 0 for a precision or recall whose denominator is 0 — scikit-learn's defaults.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from pspo_eval import stats


def majority(values: Sequence[int | None]) -> int | None:
    """The most common verdict; when two verdicts share the highest count, a tie (0). None if all are missing."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    counts = Counter(present).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return 0
    return counts[0][0]


def round_half_up(value: float) -> int:
    """The nearest scale point (x.5 rounds up): the category a mean of repeated scores is compared in."""
    return int(math.floor(value + 0.5))


# ---------------------------------------------------------------------------------------------
# Agreement with a gold rater


def confusion(gold: np.ndarray, pred: np.ndarray, size: int) -> np.ndarray:
    """Joint counts: ``m[i, j]`` = items with gold code i and predicted code j (codes 0..size-1)."""
    return np.bincount(gold * size + pred, minlength=size * size).reshape(size, size).astype(float)


# Cohen's kappa from joint counts: the one implementation, in pspo_eval.stats.
kappa_from_confusion = stats.kappa_from_counts


def macro_scores(m: np.ndarray) -> tuple[float, float, float]:
    """Macro precision, recall and F1 from joint counts (rows gold, columns predicted), see the module docstring."""
    gold_totals, pred_totals, hits = m.sum(axis=1), m.sum(axis=0), np.diag(m)
    used = (gold_totals > 0) | (pred_totals > 0)
    if not used.any():
        return float("nan"), float("nan"), float("nan")
    precision = np.divide(hits, pred_totals, out=np.zeros_like(hits), where=pred_totals > 0)
    recall = np.divide(hits, gold_totals, out=np.zeros_like(hits), where=gold_totals > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(hits), where=denom > 0)
    return float(precision[used].mean()), float(recall[used].mean()), float(f1[used].mean())


@dataclass(frozen=True)
class Classification:
    n: int
    accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    kappa: float


def classification(gold: Sequence[Hashable], pred: Sequence[Hashable], labels: Sequence[Hashable]) -> Classification:
    """Accuracy, macro P/R/F1 and Cohen's kappa of ``pred`` against ``gold`` (equal-length, no missing values)."""
    g, p, size = encode(gold, pred, labels)
    m = confusion(g, p, size)
    precision, recall, f1 = macro_scores(m)
    return Classification(len(g), float(np.trace(m) / m.sum()), precision, recall, f1, kappa_from_confusion(m))


def encode(gold: Sequence[Hashable], pred: Sequence[Hashable], labels: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray, int]:
    """Both raters' labels as integer codes (positions in ``labels``)."""
    position = {label: i for i, label in enumerate(labels)}
    try:
        g = np.array([position[x] for x in gold], dtype=np.int64)
        p = np.array([position[x] for x in pred], dtype=np.int64)
    except KeyError as exc:
        raise stats.StatsInputError(f"verdict {exc.args[0]!r} is not one of {list(labels)}") from None
    if len(g) != len(p) or len(g) == 0:
        raise stats.StatsInputError("gold and predicted verdicts need the same, non-zero number of items")
    return g, p, len(labels)


# ---------------------------------------------------------------------------------------------
# Bootstrap over items


def bootstrap_cis(
    n: int, statistics: Callable[[np.ndarray], dict[str, float]], *, n_boot: int = 1000, seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of several statistics of the same n items, all on the same resamples.

    ``statistics`` takes an index array (a resample of range(n), with replacement) and returns
    ``{name: value}``; a resample on which a statistic is undefined (NaN, e.g. kappa when one
    category remains) is skipped for that statistic. An interval over fewer than 10 defined
    resamples is (NaN, NaN).
    """
    replicates: dict[str, list[float]] = {}
    if n >= 1:
        rng = np.random.default_rng(seed)
        for _ in range(n_boot):
            for name, value in statistics(rng.integers(0, n, size=n)).items():
                bucket = replicates.setdefault(name, [])
                if value == value:  # not NaN
                    bucket.append(value)
    tail = (1.0 - confidence) / 2.0
    out = {}
    for name, values in replicates.items():
        if len(values) < 10:
            out[name] = (float("nan"), float("nan"))
        else:
            low, high = np.quantile(values, [tail, 1.0 - tail])
            out[name] = (float(low), float(high))
    return out


def mean_ci(values: Sequence[float], *, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) by the bootstrap of :mod:`pspo_eval.stats`; NaNs for no values."""
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    return stats.mean_ci_bootstrap(list(values), n_boot=n_boot, seed=seed)


def alpha_or_nan(matrix: Sequence[Sequence[Hashable | None]], level: str = "ordinal") -> float:
    try:
        return float(stats.krippendorff_alpha(matrix, level=level))  # type: ignore[arg-type]
    except stats.StatsInputError:
        return float("nan")


# ---------------------------------------------------------------------------------------------
# Length


def longer_preferred(verdicts: Sequence[int], candidate_lengths: Sequence[float],
                     baseline_lengths: Sequence[float]) -> list[float]:
    """Per decisive verdict with unequal lengths: 1.0 if the judge chose the longer response, else 0.0.

    A tie, or two responses of the same length, says nothing about a preference for length and is
    left out. The share of ones is the rate the report shows (0.5 = no length preference).
    """
    out = []
    for v, c, b in zip(verdicts, candidate_lengths, baseline_lengths, strict=True):
        if v == 0 or c == b:
            continue
        out.append(1.0 if (v > 0) == (c > b) else 0.0)
    return out


def _fit_logistic(y: np.ndarray, x: np.ndarray, ridge: float = 1e-4, iters: int = 50) -> tuple[float, float]:
    """Maximise sum y log s(t + f x) + (1 - y) log s(-t - f x) - ridge/2 (t^2 + f^2) by Newton's method.

    ``y`` may be fractional (a tie is 0.5), as in the Bradley–Terry fit of :mod:`pspo_eval.stats`.
    The tiny ridge keeps the fit finite when one side always wins.
    """
    theta = np.zeros(2)
    design = np.stack([np.ones_like(x), x], axis=1)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        gradient = design.T @ (y - p) - ridge * theta
        w = p * (1.0 - p)
        hessian = (design * w[:, None]).T @ design + ridge * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        theta = theta + step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return float(theta[0]), float(theta[1])


@dataclass(frozen=True)
class LengthControlled:
    win_rate: float  # the raw win rate, mean of y
    lc_win_rate: float  # sigma(theta): the fitted win rate at zero length difference
    length_coef: float  # phi, on tanh(difference / sd)
    sd: float  # the length-difference scale


def length_controlled_win_rate(outcomes: Sequence[float], length_diff: Sequence[float], *,
                               sd: float | None = None) -> LengthControlled:
    """The win rate a judge would give at equal lengths (AlpacaEval-style; formula in docs/judging.md).

    Fits P(candidate wins) = sigma(theta + phi * tanh(d / sd)), with d = candidate length - baseline
    length, sd the standard deviation of d (given, or computed over these items; 0 -> no length
    term), y = 1 win / 0.5 tie / 0 loss, and reads it at d = 0: LC = sigma(theta).
    """
    y = np.asarray(outcomes, dtype=float)
    d = np.asarray(length_diff, dtype=float)
    if y.size == 0:
        return LengthControlled(float("nan"), float("nan"), float("nan"), float("nan"))
    scale = float(np.std(d)) if sd is None else float(sd)
    x = np.tanh(d / scale) if scale > 0 else np.zeros_like(d)
    theta, phi = _fit_logistic(y, x)
    return LengthControlled(float(y.mean()), 1.0 / (1.0 + math.exp(-theta)), phi, scale)


# ---------------------------------------------------------------------------------------------
# Probability-weighted scores (G-Eval)


def expected_value(alternatives: dict[str, float], low: int, high: int) -> float | None:
    """sum_s s * p(s) / sum_s p(s) over the tokens that spell a scale point s in [low, high].

    ``alternatives`` maps a token to its log-probability (the top-K at one position). Tokens are
    compared after stripping spaces, quotes and colons (" 4", "4", "\\"4", ": 4" all mean 4). None when no
    alternative is a scale point. Renormalising over the scale's tokens is G-Eval's (Liu et al.
    2023, "G-Eval: NLG Evaluation using GPT-4 with Better Human Alignment") expected score.
    """
    mass: dict[int, float] = {}
    for token, logprob in alternatives.items():
        text = token.strip(' \t\n":')
        if text.isdigit() and low <= int(text) <= high and logprob is not None and math.isfinite(logprob):
            mass[int(text)] = mass.get(int(text), 0.0) + math.exp(logprob)
    total = sum(mass.values())
    if total <= 0.0:
        return None
    return sum(s * p for s, p in mass.items()) / total


def _token_offsets(content: str, top_logprobs: Sequence[dict[str, float]],
                   sampled: Sequence[str] | None = None) -> list[tuple[int, str]] | None:
    """(offset in ``content``, sampled token) of each generated token, or None if they do not line up.

    ``sampled`` are the tokens the endpoint says it generated (the SDK's ``logprobs.content[i].token``):
    they are used when they spell ``content``. Under structured output (``json_schema``) the grammar
    forces tokens that are often not among the top-K alternatives of the unconstrained
    distribution (vLLM 0.32 on the demo model: "rat" of "rationale" was outside its top 20), so only
    the sampled tokens locate every score. Without them, the sampled token is the alternative that
    continues ``content`` (the most probable one when several do).
    """
    if sampled is not None and len(sampled) == len(top_logprobs):
        tokens, at = [], 0
        for token in sampled:
            if at >= len(content):  # tokens past the text: vLLM lists the end-of-turn token (<|im_end|>) too
                break
            if not content.startswith(token, at):
                break  # a byte-level piece or a renamed token: fall back to the alternatives
            tokens.append((at, token))
            at += len(token)
        else:
            return tokens
        if at >= len(content):
            return tokens
    tokens, at = [], 0
    for alternatives in top_logprobs:
        if at >= len(content):
            break
        fitting = [(lp, tok) for tok, lp in alternatives.items() if tok and content.startswith(tok, at)]
        if not fitting:
            return None
        token = max(fitting)[1]
        tokens.append((at, token))
        at += len(token)
    return tokens


def expected_scores(content: str | None, top_logprobs: Sequence[dict[str, float]] | None,
                    scale: dict[str, tuple[int, int]],
                    sampled: Sequence[str] | None = None) -> dict[str, float] | None:
    """Per criterion, the expected score at the token where the reply writes that criterion's score.

    ``content`` is the judge's reply (JSON with ``"criterion": 4``), ``top_logprobs`` the top-K
    alternatives of each generated token (``ChatReply.top_logprobs``), ``scale`` criterion -> (low,
    high), ``sampled`` the generated tokens when the endpoint names them. A criterion is left out
    when its score cannot be located, or when the token there does not spell the whole number (a "10" split into "1" and "0": the alternatives of "1" are not a
    distribution over the scale). None when no criterion is left (or the endpoint gave no
    log-probabilities).
    """
    if not content or not top_logprobs:
        return None
    tokens = _token_offsets(content, top_logprobs, sampled)
    if tokens is None:
        return None
    out: dict[str, float] = {}
    for criterion, (low, high) in scale.items():
        match = re.search(r'"' + re.escape(criterion) + r'"\s*:\s*"?(\d+)', content)
        if match is None:
            continue
        start = match.start(1)
        position = max((i for i, (o, _) in enumerate(tokens) if o <= start), default=None)
        if position is None:
            continue
        offset, token = tokens[position]
        if not token.strip(' \t\n":') == match.group(1) or offset + len(token) < match.end(1):
            continue
        value = expected_value(top_logprobs[position], low, high)
        if value is not None:
            out[criterion] = value
    return out or None
