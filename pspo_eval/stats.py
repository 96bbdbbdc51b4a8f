"""The statistics every stage uses: pass@k, maj@k, intervals, paired tests, agreement, Bradley–Terry.

Why one module: the evaluate, judge and report stages must agree on every convention (how ties in a
majority vote are scored, which interval a table prints, where the Bradley–Terry scale is anchored),
so the conventions live here once, each with its formula and the paper it comes from.

Everything is pure Python + numpy; the normal distribution is the standard library's
``statistics.NormalDist``. Binomial tails, maj@k and the Bradley–Terry fit are written out here
rather than taken from scipy, which the package does not depend on at run time; the tests check
every estimator against scipy, statsmodels, scikit-learn and ``krippendorff`` as oracles
(tests/test_stats_oracles.py). Every random procedure takes a ``seed`` (an int or a
``numpy.random.Generator``) and is deterministic given it.

Invalid arguments raise :class:`StatsInputError`, which is both a ``ValueError`` (for library use)
and a :class:`~pspo_eval.errors.PspoError` (so the CLI prints it on one line with a hint).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

from pspo_eval.errors import PspoError

__all__ = [
    "StatsInputError",
    "pass_at_k",
    "maj_at_k",
    "normal_cdf",
    "normal_quantile",
    "wilson_interval",
    "mean_ci_bootstrap",
    "cluster_bootstrap_ci",
    "paired_bootstrap_diff",
    "mcnemar_exact",
    "mcnemar_from_pairs",
    "cohens_kappa",
    "krippendorff_alpha",
    "SelfConsistency",
    "self_consistency",
    "bradley_terry",
    "bradley_terry_ci",
    "bradley_terry_probability",
    "WinTieLoss",
    "win_tie_loss",
    "paired_outcomes",
]

Seed = int | np.random.Generator

# Bootstrap resamples are drawn in blocks of at most this many indices, so that a large data set
# (tens of thousands of problems) never needs an n_boot × n index matrix in memory at once.
_BOOT_BLOCK_ELEMENTS = 2_000_000


class StatsInputError(PspoError, ValueError):
    """An argument a statistic cannot be computed from (empty data, k > n, mismatched lengths, …)."""


def _check(condition: bool, message: str, hint: str | None = None) -> None:
    if not condition:
        raise StatsInputError(message, hint)


def _check_confidence(confidence: float) -> None:
    _check(
        0.0 < confidence < 1.0,
        f"confidence must lie strictly between 0 and 1, got {confidence!r}",
        "use e.g. 0.95 for a 95% interval",
    )


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------------
# pass@k and maj@k
# ---------------------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples of which ``c`` are correct.

    Formula (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", the Codex paper):
    the probability that a uniformly random size-k subset of the n samples holds at least one correct
    one,

        pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n-c+1}^{n} (1 - k / i).

    The product form is used because the binomial coefficients overflow floats for n in the
    hundreds, while every factor of the product lies in [0, 1]. When n - c < k every subset holds a
    correct sample and the value is exactly 1.
    """
    _check(n >= 1, f"pass@k needs at least one sample, got n={n}")
    _check(0 <= c <= n, f"the number of correct samples must lie in [0, n={n}], got c={c}")
    _check(
        1 <= k <= n,
        f"pass@k needs 1 <= k <= n, got k={k} with n={n}",
        "generate at least k samples per problem, or ask for a smaller k",
    )
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def _binomial_weights(m: int, p: float) -> np.ndarray:
    """``C(m, j) p^j (1-p)^(m-j)`` for j = 0..m, without overflow (see :func:`maj_at_k`)."""
    j = np.arange(m + 1)
    if p >= 1.0:
        out = np.zeros(m + 1)
        out[m] = 1.0
        return out
    if m <= 1000:  # exact binomial coefficients while they still fit in a float
        comb = np.array([float(math.comb(m, int(i))) for i in j])
        return comb * p**j * (1.0 - p) ** (m - j)
    log_comb = np.array([math.lgamma(m + 1) - math.lgamma(i + 1) - math.lgamma(m - i + 1) for i in j])
    return np.exp(log_comb + j * math.log(p) + (m - j) * math.log1p(-p))


def maj_at_k(answers: Sequence[str | None], correct_flags: Sequence[bool], k: int) -> float:
    """Expected majority-vote accuracy of one problem over all size-k subsets of its n samples.

    ``answers[i]`` is the canonical key of sample i's extracted answer (the caller canonicalizes:
    samples with equal keys vote for the same answer) or ``None`` when nothing was extracted;
    ``correct_flags[i]`` says whether that answer is right. The value is the average, over all
    C(n, k) subsets S of size k, of the credit of S (it does not look at "the first k" samples, which
    would depend on sample order). This is the maj@k of self-consistency decoding (Wang et al. 2023,
    "Self-Consistency Improves Chain of Thought Reasoning"), estimated without subsampling noise.

    Conventions:

    * **None never votes.** Samples without an extracted answer abstain; a subset of only such
      samples earns 0. Their ``correct_flags`` are ignored.
    * **Ties split the credit.** If the top vote count in S is shared by s answers, the vote picks
      one of them uniformly at random, so S earns (number of correct answers among the s) / s.
    * Every sample with the same key must carry the same flag (else the canonical key is not the
      one the grader used): a mismatch raises :class:`StatsInputError`.

    Computation (exact, no subset enumeration): let bucket b hold m_b samples with one answer and
    m_0 the ``None`` samples. A subset is a choice of j_b from every bucket with sum j_b = k, in
    prod C(m_b, j_b) ways. For each correct bucket a and each vote count t for it, a generating
    polynomial over the other buckets counts the ways in which every other answer gets <= t votes,
    tracking how many tie a at exactly t; a then wins with share 1 / (1 + ties). To keep the
    coefficients finite for large n every C(m, j) is multiplied by p^j (1-p)^(m-j) with p = k/n;
    because sum j_b = k and sum m_b = n this rescales every subset by the same constant
    p^k (1-p)^(n-k), which the normalizer C(n, k) p^k (1-p)^(n-k) divides out again.
    """
    n = len(answers)
    _check(n >= 1, "maj@k needs at least one sample")
    _check(
        len(correct_flags) == n, f"answers and correct_flags differ in length ({n} vs {len(correct_flags)})"
    )
    _check(
        1 <= k <= n,
        f"maj@k needs 1 <= k <= n, got k={k} with n={n}",
        "generate at least k samples per problem, or ask for a smaller k",
    )

    counts: Counter[str] = Counter()
    correct: dict[str, bool] = {}
    n_none = 0
    for answer, flag in zip(answers, correct_flags, strict=True):
        if answer is None:
            n_none += 1
            continue
        counts[answer] += 1
        if correct.setdefault(answer, bool(flag)) != bool(flag):
            raise StatsInputError(
                f"answer {answer!r} is marked both correct and incorrect",
                "pass the canonical answer key the grader compared, so equal keys share one verdict",
            )
    keys = sorted(counts)
    if not any(correct[key] for key in keys):
        return 0.0

    p = k / n
    weights = {key: _binomial_weights(counts[key], p) for key in keys}
    none_weights = _binomial_weights(n_none, p)
    normalizer = float(_binomial_weights(n, p)[k])

    total = 0.0
    for a in keys:
        if not correct[a]:
            continue
        others = [key for key in keys if key != a]
        for t in range(1, min(counts[a], k) + 1):
            rest = k - t  # votes to be filled by the other buckets
            # dp[x, s]: weighted ways to pick x samples from the buckets seen so far, s of which tie a.
            dp = np.zeros((rest + 1, len(others) + 1))
            dp[0, 0] = 1.0
            # The None samples are unconstrained: any number of them may be in the subset.
            if n_none:
                dp = _add_bucket(dp, none_weights, limit=n_none, tie_at=None)
            for key in others:
                dp = _add_bucket(dp, weights[key], limit=min(counts[key], t), tie_at=t)
            shares = 1.0 / np.arange(1, len(others) + 2)
            total += float(weights[a][t]) * float(dp[rest] @ shares)
    return min(1.0, max(0.0, total / normalizer))


def _add_bucket(dp: np.ndarray, w: np.ndarray, *, limit: int, tie_at: int | None) -> np.ndarray:
    """Fold one bucket into the (votes, ties) table: j votes from it with weight ``w[j]``, j <= limit.

    Picking exactly ``tie_at`` samples from the bucket makes its answer tie the candidate, which moves
    the term one column right (one more tie).
    """
    rows = dp.shape[0]
    out = np.zeros_like(dp)
    for j in range(0, min(limit, rows - 1) + 1):
        if tie_at is not None and j == tie_at:
            out[j:, 1:] += w[j] * dp[: rows - j, :-1]
        else:
            out[j:, :] += w[j] * dp[: rows - j, :]
    return out


# ---------------------------------------------------------------------------------------------------
# The normal distribution
# ---------------------------------------------------------------------------------------------------

# The quantile is the standard library's NormalDist.inv_cdf: Wichura's algorithm AS 241 (1988), exact to
# about machine precision (within 1e-12 relative of scipy from p = 1e-300 to 1 - 1e-15).
_STANDARD_NORMAL = NormalDist()


def normal_cdf(x: float) -> float:
    """Standard normal CDF, Phi(x) = erfc(-x / sqrt 2) / 2.

    Not ``NormalDist().cdf``: through Python 3.13 that is 0.5 * (1 + erf(x / sqrt 2)), which cancels in
    the lower tail (measured against scipy: 2% off at x = -8, exactly 0 below x = -8.3), while erfc
    keeps full relative precision there (about 1e-13 at x = -37). A tail probability keeps its digits.
    """
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def normal_quantile(p: float) -> float:
    """Inverse standard normal CDF: the x with Phi(x) = p, for 0 < p < 1 (``NormalDist().inv_cdf``).

    Kept as a function of its own so that 0 and 1 (infinite quantiles) fail with a one-line
    :class:`StatsInputError` rather than the standard library's bare ``StatisticsError``.
    """
    _check(0.0 < p < 1.0, f"normal_quantile needs 0 < p < 1, got {p!r}")
    return _STANDARD_NORMAL.inv_cdf(p)


def _two_sided_z(confidence: float) -> float:
    _check_confidence(confidence)
    return normal_quantile(0.5 + 0.5 * confidence)


# ---------------------------------------------------------------------------------------------------
# Intervals
# ---------------------------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927; method 3 in Newcombe 1998).

    With p = successes / n and z the two-sided normal quantile,

        centre = (p + z^2 / (2n)) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2)).

    Unlike the Wald interval it stays inside [0, 1] and does not collapse to a point at 0/n or n/n,
    which matters for the small per-dataset counts a paper table shows.
    """
    _check(n >= 1, f"a proportion needs n >= 1 trials, got n={n}")
    _check(0 <= successes <= n, f"successes must lie in [0, n={n}], got {successes}")
    z = _two_sided_z(confidence)
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))
    # At 0/n and n/n the bound equals the end point exactly; rounding must not push it past.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def _as_1d(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    _check(array.ndim == 1, f"{what} must be a flat list of numbers")
    _check(array.size >= 1, f"{what} is empty", "a statistic needs at least one value")
    _check(bool(np.all(np.isfinite(array))), f"{what} contains NaN or infinite values")
    return array


def _bootstrap_statistic(n: int, n_boot: int, seed: Seed, statistic) -> np.ndarray:
    """``statistic(index_matrix)`` on n_boot resamples (with replacement) of range(n), drawn in blocks."""
    _check(n_boot >= 1, f"n_boot must be >= 1, got {n_boot}")
    rng = _rng(seed)
    block = max(1, _BOOT_BLOCK_ELEMENTS // max(n, 1))
    parts = []
    for start in range(0, n_boot, block):
        rows = min(block, n_boot - start)
        parts.append(statistic(rng.integers(0, n, size=(rows, n))))
    return np.concatenate(parts)


def _percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low, high = np.quantile(replicates, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def mean_ci_bootstrap(
    values: Sequence[float], *, confidence: float = 0.95, n_boot: int = 2000, seed: Seed = 0
) -> tuple[float, float, float]:
    """Mean of ``values`` with a percentile-bootstrap interval: ``(mean, low, high)``.

    Percentile bootstrap (Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13): draw
    n_boot resamples of the n values with replacement, take each resample's mean, and report the
    (1 - confidence)/2 and (1 + confidence)/2 quantiles of those means. It needs no normality of the
    per-problem scores (which are often 0/1 or bounded and skewed).
    """
    _check_confidence(confidence)
    array = _as_1d(values, "values")
    replicates = _bootstrap_statistic(array.size, n_boot, seed, lambda idx: array[idx].mean(axis=1))
    low, high = _percentile_interval(replicates, confidence)
    return float(array.mean()), low, high


def cluster_bootstrap_ci(
    per_problem_values: Sequence[Sequence[float]],
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: Seed = 0,
    weighting: Literal["problem", "sample"] = "problem",
) -> tuple[float, float, float]:
    """Mean score with a cluster-bootstrap interval, resampling problems (not samples).

    Several samples of one problem are correlated (an easy problem is solved by most of them), so
    treating them as independent would give too narrow an interval. The cluster bootstrap (Davison &
    Hinkley 1997, "Bootstrap Methods and their Application", section 3.8) resamples whole problems
    with replacement and recomputes the estimate on each resample.

    ``weighting="problem"`` (default): the estimate is the mean of the per-problem means, every
    problem weighing the same. ``weighting="sample"``: the estimate is sum of all values / number of
    values (a ratio estimator), so problems with more samples weigh more. Returns
    ``(estimate, low, high)``.
    """
    _check_confidence(confidence)
    _check(
        len(per_problem_values) >= 1, "per_problem_values is empty", "a statistic needs at least one problem"
    )
    _check(
        weighting in ("problem", "sample"), f"unknown weighting {weighting!r}", "use 'problem' or 'sample'"
    )
    sums = np.empty(len(per_problem_values))
    sizes = np.empty(len(per_problem_values))
    for index, values in enumerate(per_problem_values):
        array = _as_1d(values, f"the values of problem {index}")
        sums[index] = array.sum()
        sizes[index] = array.size
    if weighting == "problem":
        means = sums / sizes
        estimate = float(means.mean())

        def statistic(idx: np.ndarray) -> np.ndarray:
            return means[idx].mean(axis=1)
    else:
        estimate = float(sums.sum() / sizes.sum())

        def statistic(idx: np.ndarray) -> np.ndarray:
            return sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)

    replicates = _bootstrap_statistic(len(sums), n_boot, seed, statistic)
    low, high = _percentile_interval(replicates, confidence)
    return estimate, low, high


def paired_bootstrap_diff(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_boot: int = 2000,
    seed: Seed = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Mean paired difference mean(a - b) with a paired percentile-bootstrap interval.

    ``a[i]`` and ``b[i]`` are two systems' scores on the same problem i. Resampling problems (the same
    index for both systems) keeps the pairing, so problem difficulty, shared by both systems, cancels
    out of the interval (the paired bootstrap of Koehn 2004, "Statistical Significance Tests for
    Machine Translation Evaluation"). Returns ``(diff, low, high)``; an interval that excludes 0 means
    the difference is significant at level 1 - confidence.
    """
    array_a = _as_1d(a, "a")
    array_b = _as_1d(b, "b")
    _check(
        array_a.size == array_b.size,
        f"paired scores need equal lengths, got {array_a.size} and {array_b.size}",
        "score both systems on the same problems, in the same order",
    )
    return mean_ci_bootstrap(array_a - array_b, confidence=confidence, n_boot=n_boot, seed=seed)


# ---------------------------------------------------------------------------------------------------
# McNemar
# ---------------------------------------------------------------------------------------------------


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts.

    ``b``: problems system A gets right and B wrong; ``c``: the reverse. Under the null hypothesis of
    equal accuracy each discordant pair is a fair coin, so with n = b + c (McNemar 1947; the exact
    form is the binomial sign test, e.g. Fagerland, Lydersen & Laake 2013, "The McNemar test for
    binary matched-pairs data"):

        p = min(1, 2 * sum_{i=0}^{min(b, c)} C(n, i) / 2^n),   and p = 1 when n = 0.

    The sum is done in exact integers; Python's int / int division rounds the final ratio correctly
    even when 2^n has thousands of digits.
    """
    _check(b >= 0 and c >= 0, f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, (2 * tail) / (2**n))


def mcnemar_from_pairs(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> tuple[int, int, float]:
    """Count the discordant pairs of two systems' per-problem verdicts and test them: ``(b, c, p)``."""
    _check(
        len(a_correct) == len(b_correct),
        f"paired verdicts need equal lengths, got {len(a_correct)} and {len(b_correct)}",
        "grade both systems on the same problems, in the same order",
    )
    b = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if x and not y)
    c = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if y and not x)
    return b, c, mcnemar_exact(b, c)


# ---------------------------------------------------------------------------------------------------
# Agreement between raters (judges), and of one judge with itself
# ---------------------------------------------------------------------------------------------------


def _disagreement_weights(size: int, weights: str | None) -> np.ndarray:
    index = np.arange(size)
    gap = np.abs(index[:, None] - index[None, :]).astype(float)
    if weights is None:
        return (gap > 0).astype(float)
    scale = max(size - 1, 1)
    if weights == "linear":
        return gap / scale
    if weights == "quadratic":
        return (gap / scale) ** 2
    raise StatsInputError(f"unknown kappa weights {weights!r}", "use None, 'linear' or 'quadratic'")


def cohens_kappa(
    r1: Sequence[Hashable | None],
    r2: Sequence[Hashable | None],
    *,
    weights: Literal["linear", "quadratic"] | None = None,
    labels: Sequence[Hashable] | None = None,
) -> float:
    """Cohen's kappa between two raters, optionally weighted for ordinal scales.

    With O the observed joint proportions of (r1, r2), E the product of the two marginals (agreement
    expected by chance) and w_ij a disagreement weight (Cohen 1960; weighted: Cohen 1968),

        kappa = 1 - sum_ij w_ij O_ij / sum_ij w_ij E_ij.

    Unweighted: w_ij = [i != j], which is the familiar (p_o - p_e) / (1 - p_e). Linear:
    w_ij = |i - j| / (K - 1); quadratic: w_ij = (i - j)^2 / (K - 1)^2, where i, j are positions in
    ``labels`` (default: the sorted union of the observed ratings). Pass the full scale as ``labels``
    (e.g. 1..5) when some points of it were never used, so gaps are measured on the real scale.

    Pairs in which either rating is None (a failed judgment) are left out. Returns NaN when the
    chance disagreement is 0 (both raters used one and the same category): kappa is undefined then.
    """
    _check(len(r1) == len(r2), f"the two raters rated different numbers of items ({len(r1)} vs {len(r2)})")
    pairs = [(x, y) for x, y in zip(r1, r2, strict=True) if x is not None and y is not None]
    _check(len(pairs) >= 1, "no item was rated by both raters", "kappa needs items rated by both")
    if labels is None:
        try:
            categories = sorted({x for pair in pairs for x in pair})  # type: ignore[type-var]
        except TypeError as exc:
            raise StatsInputError("the ratings cannot be ordered", "pass labels=[…] in scale order") from exc
    else:
        categories = list(labels)
        _check(len(set(categories)) == len(categories), "labels contains duplicates")
    position = {label: index for index, label in enumerate(categories)}
    unknown = {x for pair in pairs for x in pair if x not in position}
    _check(not unknown, f"ratings {sorted(map(repr, unknown))} are not in labels", "add them to labels")
    size = len(categories)
    counts = np.zeros((size, size))
    for x, y in pairs:
        counts[position[x], position[y]] += 1.0
    return kappa_from_counts(counts, weights=weights)


def kappa_from_counts(counts: np.ndarray, *, weights: Literal["linear", "quadratic"] | None = None) -> float:
    """Cohen's kappa (see :func:`cohens_kappa`) from the K × K joint counts of two raters' codes.

    The form for callers that already hold integer codes, such as a bootstrap that recomputes kappa
    on every resample. NaN for no items or no chance disagreement (a single category used).
    """
    total = float(counts.sum())
    if total <= 0:
        return float("nan")
    observed = counts / total
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    w = _disagreement_weights(counts.shape[0], weights)
    chance = float((w * expected).sum())
    if chance <= 1e-12:  # one category only; rounding may leave a speck above 0
        return float("nan")
    return 1.0 - float((w * observed).sum()) / chance


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _alpha_delta2(level: str, categories: list, marginals: np.ndarray) -> np.ndarray:
    """Krippendorff's squared difference delta2_ck between the observed categories, by level."""
    size = len(categories)
    if level == "nominal":
        return 1.0 - np.eye(size)
    if level == "ordinal":
        cumulative = np.concatenate([[0.0], np.cumsum(marginals)])
        lo = np.minimum.outer(np.arange(size), np.arange(size))
        hi = np.maximum.outer(np.arange(size), np.arange(size))
        between = cumulative[hi + 1] - cumulative[lo]  # sum of n_g for g from c to k inclusive
        return (between - (marginals[:, None] + marginals[None, :]) / 2.0) ** 2
    try:
        numbers = np.array([float(value) for value in categories])
    except (TypeError, ValueError) as exc:
        raise StatsInputError(f"{level} alpha needs numeric ratings") from exc
    difference = numbers[:, None] - numbers[None, :]
    if level == "interval":
        return difference**2
    _check(bool(np.all(numbers >= 0)), "ratio alpha needs non-negative ratings")
    summed = numbers[:, None] + numbers[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(summed > 0, (difference / np.where(summed > 0, summed, 1.0)) ** 2, 0.0)


def krippendorff_alpha(
    reliability_data: Sequence[Sequence[Hashable | None]],
    level: Literal["nominal", "ordinal", "interval", "ratio"] = "nominal",
) -> float:
    """Krippendorff's alpha for a raters × units matrix; None (or float NaN) marks a missing rating.

    Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": from the units with at least
    two ratings build the coincidence matrix o_ck = sum_u (number of ordered pairs of ratings (c, k)
    in u from different raters) / (m_u - 1), with m_u the ratings in unit u; n_c = sum_k o_ck and
    n = sum_c n_c. Then

        alpha = 1 - D_o / D_e = 1 - (n - 1) * sum_ck o_ck delta2_ck / sum_ck n_c n_k delta2_ck,

    with the squared difference delta2 by level: nominal [c != k]; interval (c - k)^2; ratio
    ((c - k) / (c + k))^2; ordinal (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2 over the ranks of the
    observed values. Units with a single rating carry no information on agreement and are dropped.
    Returns NaN when no variation was observed (D_e = 0): alpha is undefined then.
    """
    _check(
        level in ("nominal", "ordinal", "interval", "ratio"),
        f"unknown level {level!r}",
        "use 'nominal', 'ordinal', 'interval' or 'ratio'",
    )
    rows = [list(row) for row in reliability_data]
    _check(len(rows) >= 1, "reliability_data has no raters")
    n_units = len(rows[0])
    _check(
        all(len(row) == n_units for row in rows),
        "every rater's row must have one entry per unit",
        "use None for a unit a rater did not rate",
    )
    units = [[row[u] for row in rows if not _is_missing(row[u])] for u in range(n_units)]
    units = [values for values in units if len(values) >= 2]
    _check(bool(units), "no unit has two or more ratings", "alpha needs units rated by at least two raters")

    observed_values = {value for values in units for value in values}
    if level == "nominal":
        categories = list(observed_values)
    else:
        try:
            categories = sorted(observed_values)  # type: ignore[type-var]
        except TypeError as exc:
            raise StatsInputError(f"{level} alpha needs ratings that can be ordered") from exc
    index = {value: i for i, value in enumerate(categories)}
    size = len(categories)

    coincidence = np.zeros((size, size))
    for values in units:
        counts = np.zeros(size)
        for value in values:
            counts[index[value]] += 1.0
        coincidence += (np.outer(counts, counts) - np.diag(counts)) / (len(values) - 1)
    marginals = coincidence.sum(axis=1)
    total = marginals.sum()

    delta2 = _alpha_delta2(level, categories, marginals)
    np.fill_diagonal(delta2, 0.0)

    expected = float((np.outer(marginals, marginals) * delta2).sum())
    if expected <= 0.0:
        return float("nan")
    return 1.0 - (total - 1.0) * float((coincidence * delta2).sum()) / expected


@dataclass(frozen=True)
class SelfConsistency:
    """How consistently one judge rates the same item when asked several times.

    ``n_items``: items with at least two usable repeats. ``pairwise_agreement``: the mean over those
    items of the share of repeat pairs that agree exactly. ``mean_std``: the mean over items of the
    sample standard deviation (ddof = 1) of the repeats; NaN when the ratings are not numbers.
    ``alpha``: Krippendorff's alpha with the repeats as raters (at the requested level), which corrects
    the agreement for chance.
    """

    n_items: int
    pairwise_agreement: float
    mean_std: float
    alpha: float


def self_consistency(
    repeats: Sequence[Sequence[Hashable | None]],
    *,
    level: Literal["nominal", "ordinal", "interval", "ratio"] = "nominal",
) -> SelfConsistency:
    """Summarize repeated ratings of the same items: ``repeats[i]`` holds item i's repeated ratings.

    Missing ratings (None) are dropped; items with fewer than two ratings are skipped. Pairwise exact
    agreement for an item with m ratings is (number of equal unordered pairs) / C(m, 2).
    """
    usable = [[value for value in item if not _is_missing(value)] for item in repeats]
    usable = [item for item in usable if len(item) >= 2]
    _check(bool(usable), "no item has two or more repeated ratings", "run the judge at least twice per item")
    agreements = []
    for item in usable:
        counts = Counter(item)
        equal_pairs = sum(m * (m - 1) // 2 for m in counts.values())
        agreements.append(equal_pairs / math.comb(len(item), 2))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for item in usable for v in item)
    mean_std = (
        float(np.mean([np.std(np.asarray(item, dtype=float), ddof=1) for item in usable]))
        if numeric
        else float("nan")
    )
    width = max(len(item) for item in usable)
    matrix = [[item[r] if r < len(item) else None for item in usable] for r in range(width)]
    alpha = krippendorff_alpha(matrix, level=level)
    return SelfConsistency(len(usable), float(np.mean(agreements)), mean_std, alpha)


# ---------------------------------------------------------------------------------------------------
# Bradley–Terry and win/tie/loss
# ---------------------------------------------------------------------------------------------------

_ELO_PER_LOG_UNIT = 400.0 / math.log(10.0)
_ELO_BASE = 1000.0


def _comparison_arrays(
    comparisons: Sequence[tuple[str, str, float]],
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Players (sorted, so results do not depend on input order) and the comparisons as index arrays."""
    _check(len(comparisons) >= 1, "no comparisons to fit", "Bradley–Terry needs at least one comparison")
    names = sorted({name for first, second, _ in comparisons for name in (first, second)})
    position = {name: i for i, name in enumerate(names)}
    first = np.empty(len(comparisons), dtype=np.int64)
    second = np.empty(len(comparisons), dtype=np.int64)
    outcome = np.empty(len(comparisons))
    for row, (a, b, y) in enumerate(comparisons):
        _check(a != b, f"comparison {row} pits {a!r} against itself")
        _check(
            0.0 <= float(y) <= 1.0,
            f"comparison {row} has outcome {y!r}",
            "use 1 when the first wins, 0 when the second wins, 0.5 for a tie",
        )
        first[row], second[row], outcome[row] = position[a], position[b], float(y)
    return names, first, second, outcome


def _fit_bradley_terry(
    n_players: int,
    first: np.ndarray,
    second: np.ndarray,
    outcome: np.ndarray,
    ridge: float,
    max_iter: int,
    tol: float,
) -> np.ndarray:
    """Newton's method with backtracking on the ridge-penalized Bradley–Terry log-likelihood."""

    def objective(theta: np.ndarray) -> float:
        d = theta[first] - theta[second]
        # y log sigma(d) + (1 - y) log sigma(-d), with log sigma(x) = -log(1 + e^-x) done stably.
        loglik = -(outcome * np.logaddexp(0.0, -d) + (1.0 - outcome) * np.logaddexp(0.0, d)).sum()
        return float(loglik - 0.5 * ridge * (theta @ theta))

    theta = np.zeros(n_players)
    value = objective(theta)
    for _ in range(max_iter):
        d = theta[first] - theta[second]
        p = 1.0 / (1.0 + np.exp(-d))
        residual = outcome - p
        gradient = (
            np.bincount(first, residual, n_players) - np.bincount(second, residual, n_players) - ridge * theta
        )
        w = p * (1.0 - p)
        hessian = ridge * np.eye(n_players)  # minus the Hessian: a weighted graph Laplacian + ridge
        np.add.at(hessian, (first, first), w)
        np.add.at(hessian, (second, second), w)
        np.add.at(hessian, (first, second), -w)
        np.add.at(hessian, (second, first), -w)
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while True:
            candidate = theta + scale * step
            candidate_value = objective(candidate)
            if candidate_value >= value - 1e-12 or scale < 1e-8:
                break
            scale *= 0.5
        theta, value = candidate, candidate_value
        if float(np.max(np.abs(scale * step))) < tol:
            break
    return theta


def _bt_scale(theta: np.ndarray, names: Sequence[str], scale: str, anchor: str | None) -> np.ndarray:
    if anchor is not None:
        _check(
            anchor in names, f"anchor {anchor!r} took part in no comparison", "anchor on a compared player"
        )
        theta = theta - theta[list(names).index(anchor)]
    if scale == "elo":
        return _ELO_BASE + _ELO_PER_LOG_UNIT * theta
    return theta


def bradley_terry(
    comparisons: Sequence[tuple[str, str, float]],
    *,
    ridge: float = 1e-3,
    scale: Literal["log", "elo"] = "log",
    anchor: str | None = None,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> dict[str, float]:
    """Fit Bradley–Terry strengths from pairwise outcomes ``(first, second, y)``.

    ``y`` is 1 when ``first`` wins, 0 when ``second`` wins and 0.5 for a tie (a tie counts as half a
    win for each, as in Hunter 2004, "MM algorithms for generalized Bradley–Terry models").
    The model (Bradley & Terry 1952): P(i beats j) = sigma(theta_i - theta_j) = 1 / (1 + e^-(theta_i
    - theta_j)). We maximize

        sum y log sigma(theta_i - theta_j) + (1 - y) log sigma(theta_j - theta_i) - ridge/2 |theta|^2

    by Newton's method. The tiny ridge (a weak Gaussian prior, sd = 1/sqrt(ridge) ≈ 32 log units by
    default) keeps the fit finite when a player never lost or never won, where the unpenalized
    maximum is at infinity.

    Scale and anchor: ``scale="log"`` returns theta in natural-log units (the log-odds of winning),
    ``scale="elo"`` returns 1000 + 400 / ln(10) * theta (Elo points: +400 = 10:1 odds). Without an
    ``anchor`` the strengths average 0 (Elo: 1000) within each connected group of players (the
    penalized optimum is centred automatically, since every comparison's gradient sums to zero);
    with ``anchor="base-model"`` that player sits at exactly 0 (Elo: 1000) and the others are
    relative to it. Scores of players never compared, even indirectly, are not comparable to each other.
    """
    _check(ridge > 0.0, f"ridge must be > 0, got {ridge}", "use a tiny value such as 1e-3")
    _check(scale in ("log", "elo"), f"unknown scale {scale!r}", "use 'log' or 'elo'")
    names, first, second, outcome = _comparison_arrays(comparisons)
    theta = _fit_bradley_terry(len(names), first, second, outcome, ridge, max_iter, tol)
    scores = _bt_scale(theta, names, scale, anchor)
    return {name: float(score) for name, score in zip(names, scores, strict=True)}


def bradley_terry_ci(
    comparisons: Sequence[tuple[str, str, float]],
    n_boot: int = 1000,
    seed: Seed = 0,
    *,
    confidence: float = 0.95,
    ridge: float = 1e-3,
    scale: Literal["log", "elo"] = "log",
    anchor: str | None = None,
) -> dict[str, tuple[float, float, float]]:
    """Bradley–Terry scores with percentile-bootstrap intervals: ``{player: (score, low, high)}``.

    Resamples the comparisons with replacement (n_boot times), refits each resample with the same
    scale and anchor, and takes the percentile interval of each player's score. Every player stays in
    every refit: one who drew no comparison in a resample sits at the prior (0, or the anchor's level),
    which widens its interval, as it should.
    """
    _check_confidence(confidence)
    _check(ridge > 0.0, f"ridge must be > 0, got {ridge}", "use a tiny value such as 1e-3")
    _check(scale in ("log", "elo"), f"unknown scale {scale!r}", "use 'log' or 'elo'")
    names, first, second, outcome = _comparison_arrays(comparisons)
    point = _bt_scale(
        _fit_bradley_terry(len(names), first, second, outcome, ridge, 100, 1e-10), names, scale, anchor
    )

    def refit(idx: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                _bt_scale(
                    _fit_bradley_terry(len(names), first[row], second[row], outcome[row], ridge, 100, 1e-8),
                    names,
                    scale,
                    anchor,
                )
                for row in idx
            ]
        )

    replicates = _bootstrap_statistic(len(comparisons), n_boot, seed, refit)
    result = {}
    for column, name in enumerate(names):
        low, high = _percentile_interval(replicates[:, column], confidence)
        result[name] = (float(point[column]), low, high)
    return result


def bradley_terry_probability(score_a: float, score_b: float, scale: Literal["log", "elo"] = "log") -> float:
    """P(a beats b) under Bradley–Terry: sigma(theta_a - theta_b) (Elo: 1 / (1 + 10^((b - a) / 400)))."""
    gap = score_a - score_b
    if scale == "elo":
        gap /= _ELO_PER_LOG_UNIT
    return 0.5 * (1.0 + math.tanh(0.5 * gap))


@dataclass(frozen=True)
class WinTieLoss:
    """Counts of outcomes from the first system's point of view, and its win rate (a tie = half a win)."""

    wins: int
    ties: int
    losses: int

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def win_rate(self) -> float:
        """(wins + ties / 2) / n: the share of comparisons won, NaN when there are none."""
        return (self.wins + 0.5 * self.ties) / self.n if self.n else float("nan")


def win_tie_loss(outcomes: Sequence[float]) -> WinTieLoss:
    """Tally outcomes coded 1 (win), 0.5 (tie), 0 (loss), as in the Bradley–Terry comparisons."""
    wins = ties = losses = 0
    for outcome in outcomes:
        if outcome == 1:
            wins += 1
        elif outcome == 0.5:
            ties += 1
        elif outcome == 0:
            losses += 1
        else:
            raise StatsInputError(f"outcome {outcome!r} is not 1, 0.5 or 0", "code win=1, tie=0.5, loss=0")
    return WinTieLoss(wins, ties, losses)


def paired_outcomes(a: Sequence[float], b: Sequence[float], *, tolerance: float = 0.0) -> list[float]:
    """Per-item outcome of system a against b from paired scores: 1 if a > b, 0 if a < b, else 0.5.

    Scores with |a - b| <= ``tolerance`` count as a tie (0 by default: only equal scores tie).
    """
    _check(len(a) == len(b), f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    _check(tolerance >= 0.0, f"tolerance must be >= 0, got {tolerance}")
    outcomes = []
    for x, y in zip(a, b, strict=True):
        if abs(x - y) <= tolerance:
            outcomes.append(0.5)
        else:
            outcomes.append(1.0 if x > y else 0.0)
    return outcomes
