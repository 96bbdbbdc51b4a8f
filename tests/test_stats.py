"""Tests for pspo_eval.stats against brute force, hand computations and published worked examples."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import numpy as np
import pytest

from pspo_eval.errors import PspoError
from pspo_eval.stats import (
    SelfConsistency,
    StatsInputError,
    WinTieLoss,
    bradley_terry,
    bradley_terry_ci,
    bradley_terry_probability,
    cluster_bootstrap_ci,
    cohens_kappa,
    krippendorff_alpha,
    maj_at_k,
    mcnemar_exact,
    mcnemar_from_pairs,
    mean_ci_bootstrap,
    normal_cdf,
    normal_quantile,
    paired_bootstrap_diff,
    paired_outcomes,
    pass_at_k,
    self_consistency,
    wilson_interval,
    win_tie_loss,
)

# --------------------------------------------------------------------------------------------------
# pass@k
# --------------------------------------------------------------------------------------------------


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all size-k subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration_of_all_subsets():
    for n in range(1, 11):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_edge_cases():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 1, 10) == 1.0  # k = n: the one subset is everything
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the plain accuracy
    assert pass_at_k(16, 8, 9) == 1.0  # n - c < k: every subset holds a correct sample


def test_pass_at_k_is_stable_for_large_n():
    # C(1000, 500) overflows a float; the product form does not. One correct of 1000, k = 500 → 1/2.
    assert pass_at_k(1000, 1, 500) == pytest.approx(0.5, abs=1e-12)
    # 1 - C(n-c, k)/C(n, k) with exact integers for a mid-sized case.
    n, c, k = 200, 7, 50
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("n,c,k", [(0, 0, 1), (5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_invalid_arguments(n, c, k):
    with pytest.raises(StatsInputError) as info:
        pass_at_k(n, c, k)
    # The error is both a library ValueError and the project's user-facing error type.
    assert isinstance(info.value, ValueError) and isinstance(info.value, PspoError)


# --------------------------------------------------------------------------------------------------
# maj@k
# --------------------------------------------------------------------------------------------------


def brute_maj_at_k(answers, flags, k):
    """Average credit over every size-k subset, with the conventions maj_at_k documents."""
    verdict = {a: f for a, f in zip(answers, flags, strict=True) if a is not None}
    total = 0.0
    subsets = list(itertools.combinations(range(len(answers)), k))
    for subset in subsets:
        votes = Counter(answers[i] for i in subset if answers[i] is not None)
        if not votes:
            continue  # only unextracted samples: no answer, no credit
        top = max(votes.values())
        winners = [a for a, v in votes.items() if v == top]
        total += sum(verdict[a] for a in winners) / len(winners)
    return total / len(subsets)


def test_maj_at_k_matches_enumeration_on_random_cases():
    rng = random.Random(1234)
    for _ in range(250):
        n = rng.randint(1, 9)
        n_answers = rng.randint(1, 4)
        keys = [None] + [str(i) for i in range(n_answers)]
        answers = [rng.choice(keys) for _ in range(n)]
        verdicts = {str(i): rng.random() < 0.4 for i in range(n_answers)}
        # Flags on None answers are random on purpose: maj_at_k must ignore them.
        flags = [verdicts[a] if a is not None else rng.random() < 0.5 for a in answers]
        for k in range(1, n + 1):
            assert maj_at_k(answers, flags, k) == pytest.approx(brute_maj_at_k(answers, flags, k), abs=1e-12)


def test_maj_at_k_hand_examples():
    # A 1-1 tie between a right and a wrong answer earns half.
    assert maj_at_k(["1", "2"], [True, False], 2) == pytest.approx(0.5)
    # Two correct answers (different keys) tied: full credit.
    assert maj_at_k(["1/2", "0.5"], [True, True], 2) == pytest.approx(1.0)
    # None abstains: subsets {N,N} → 0, {N,5} twice → 1, so 2/3.
    assert maj_at_k([None, None, "5"], [False, False, True], 2) == pytest.approx(2 / 3)
    # All unextracted: nothing can win.
    assert maj_at_k([None, None], [False, False], 1) == 0.0
    # k = n is the plain majority vote over all samples: "7" (3 votes) beats "8" (2 votes).
    assert maj_at_k(["7", "8", "7", "8", "7"], [True, False, True, False, True], 5) == 1.0


def test_maj_at_1_is_the_accuracy_and_order_does_not_matter():
    rng = random.Random(7)
    answers = [rng.choice(["3", "4", "5", None]) for _ in range(40)]
    flags = [a == "4" for a in answers]
    assert maj_at_k(answers, flags, 1) == pytest.approx(sum(flags) / len(flags), abs=1e-12)
    order = list(range(40))
    rng.shuffle(order)
    shuffled_answers = [answers[i] for i in order]
    shuffled_flags = [flags[i] for i in order]
    for k in (3, 8, 21):
        assert maj_at_k(shuffled_answers, shuffled_flags, k) == pytest.approx(maj_at_k(answers, flags, k))


@pytest.mark.parametrize("right,wrong,k", [(120, 80, 41), (1600, 1400, 301)])
def test_maj_at_k_two_answers_against_exact_hypergeometric(right, wrong, k):
    # With two answers and odd k there is no tie: credit = P(more than k/2 of the subset is "right"),
    # a hypergeometric tail, computed here with exact integers. n = 3000 exercises the lgamma path.
    n = right + wrong
    tail = sum(math.comb(right, j) * math.comb(wrong, k - j) for j in range(k // 2 + 1, k + 1))
    exact = tail / math.comb(n, k)
    answers = ["r"] * right + ["w"] * wrong
    flags = [True] * right + [False] * wrong
    assert maj_at_k(answers, flags, k) == pytest.approx(exact, rel=1e-9, abs=1e-12)


def test_maj_at_k_rejects_inconsistent_flags_and_bad_k():
    with pytest.raises(StatsInputError, match="both correct and incorrect"):
        maj_at_k(["1", "1"], [True, False], 1)
    with pytest.raises(StatsInputError):
        maj_at_k(["1", "2"], [True, False], 3)
    with pytest.raises(StatsInputError):
        maj_at_k(["1", "2"], [True], 1)


# --------------------------------------------------------------------------------------------------
# Normal quantile and Wilson
# --------------------------------------------------------------------------------------------------

# Quantiles of the standard normal to 16 significant digits (standard tables, e.g. the NIST/SEMATECH
# e-Handbook's critical values; 1.959963984540054 is the classic two-sided 95% value).
KNOWN_QUANTILES = [
    (0.5, 0.0),
    (0.9, 1.2815515655446004),
    (0.95, 1.6448536269514722),
    (0.975, 1.959963984540054),
    (0.99, 2.3263478740408408),
    (0.995, 2.5758293035489004),
    (0.999, 3.090232306167813),
    (1e-10, -6.361340902404056),
]


@pytest.mark.parametrize("p,x", KNOWN_QUANTILES)
def test_normal_quantile_known_values(p, x):
    assert normal_quantile(p) == pytest.approx(x, rel=1e-14, abs=1e-15)
    # Symmetry, on the complement that floats represent exactly (1 - 1e-10 is not exactly representable).
    q = 1.0 - p
    assert normal_quantile(q) == pytest.approx(-normal_quantile(1.0 - q), rel=1e-13, abs=1e-15)


def test_normal_quantile_inverts_the_cdf_across_all_regions():
    # Both tails and the centre (AS 241, behind NormalDist.inv_cdf, switches at |p - 0.5| = 0.425).
    for p in np.concatenate([np.logspace(-300, -2, 40), np.linspace(0.01, 0.99, 99)]):
        x = normal_quantile(float(p))
        assert normal_cdf(x) == pytest.approx(p, rel=1e-12)
    with pytest.raises(StatsInputError):
        normal_quantile(0.0)
    with pytest.raises(StatsInputError):
        normal_quantile(1.0)


# Newcombe (1998), "Two-sided confidence intervals for the single proportion: comparison of seven
# methods", Statistics in Medicine 17:857-872, Table I, method 3 (Wilson score, no continuity
# correction), 95%: 81/263, 15/148, 0/20, 1/29.
NEWCOMBE_WILSON = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
]


@pytest.mark.parametrize("successes,n,low,high", NEWCOMBE_WILSON)
def test_wilson_matches_newcombe_table(successes, n, low, high):
    got_low, got_high = wilson_interval(successes, n)
    assert round(got_low, 4) == low and round(got_high, 4) == high


def test_wilson_hand_computed_values():
    z = 1.959963984540054
    # 0/10: the lower bound is 0 and the upper is z^2 / (n + z^2) = 3.84146 / 13.84146 = 0.27753.
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(z * z / (10 + z * z), rel=1e-12)
    assert round(high, 4) == 0.2775
    # 5/10: centre 0.5, half = z / (1 + z^2/10) * sqrt(0.025 + z^2/400) = 1.41600 * 0.18602 = 0.26341.
    low, high = wilson_interval(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    # Symmetry s <-> n - s, and a wider interval at higher confidence.
    low_a, high_a = wilson_interval(3, 17)
    low_b, high_b = wilson_interval(14, 17)
    assert low_a == pytest.approx(1 - high_b) and high_a == pytest.approx(1 - low_b)
    low99, high99 = wilson_interval(3, 17, confidence=0.99)
    assert low99 < low_a and high99 > high_a
    assert wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(StatsInputError):
        wilson_interval(0, 0)
    with pytest.raises(StatsInputError):
        wilson_interval(3, 10, confidence=1.0)


# --------------------------------------------------------------------------------------------------
# Bootstrap intervals
# --------------------------------------------------------------------------------------------------


def test_mean_bootstrap_contains_mean_is_reproducible_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.binomial(1, 0.3, size=100).astype(float)
    large = rng.binomial(1, 0.3, size=2500).astype(float)
    mean, low, high = mean_ci_bootstrap(small, seed=5)
    assert mean == pytest.approx(small.mean()) and low <= mean <= high
    assert mean_ci_bootstrap(small, seed=5) == (mean, low, high)
    assert mean_ci_bootstrap(small, seed=6) != (mean, low, high)
    big_mean, big_low, big_high = mean_ci_bootstrap(large, seed=5)
    assert big_low <= big_mean <= big_high
    assert (big_high - big_low) < 0.35 * (high - low)  # width ~ 1/sqrt(n): ratio 0.2 expected
    # Agrees with normal theory for a proportion: width ≈ 2 z sqrt(p(1-p)/n).
    expected = 2 * 1.96 * math.sqrt(big_mean * (1 - big_mean) / large.size)
    assert big_high - big_low == pytest.approx(expected, rel=0.15)
    # A generator works as the seed, too.
    assert mean_ci_bootstrap(small, seed=np.random.default_rng(5)) == (mean, low, high)


def test_mean_bootstrap_degenerate_and_invalid_inputs():
    assert mean_ci_bootstrap([0.7] * 20) == pytest.approx((0.7, 0.7, 0.7))
    assert mean_ci_bootstrap([1.0]) == (1.0, 1.0, 1.0)
    with pytest.raises(StatsInputError):
        mean_ci_bootstrap([])
    with pytest.raises(StatsInputError):
        mean_ci_bootstrap([1.0, float("nan")])
    with pytest.raises(StatsInputError):
        mean_ci_bootstrap([1.0, 0.0], n_boot=0)


def test_bootstrap_handles_many_values_in_blocks():
    values = np.random.default_rng(3).normal(size=20_000)
    mean, low, high = mean_ci_bootstrap(values, n_boot=300, seed=1)
    assert low < mean < high
    assert high - low == pytest.approx(2 * 1.96 / math.sqrt(values.size), rel=0.2)


def test_cluster_bootstrap_resamples_problems():
    rng = np.random.default_rng(11)
    # 60 problems of very different difficulty, 8 samples each: samples of one problem are correlated.
    difficulty = rng.uniform(0, 1, size=60)
    per_problem = [list(rng.binomial(1, p, size=8).astype(float)) for p in difficulty]
    estimate, low, high = cluster_bootstrap_ci(per_problem, seed=2)
    means = [float(np.mean(v)) for v in per_problem]
    assert estimate == pytest.approx(np.mean(means)) and low <= estimate <= high
    # "problem" weighting is exactly the bootstrap of the per-problem means (same resampled indices).
    assert (estimate, low, high) == pytest.approx(mean_ci_bootstrap(means, seed=2))
    # Treating the 480 samples as independent understates the uncertainty.
    flat = [x for values in per_problem for x in values]
    _, naive_low, naive_high = mean_ci_bootstrap(flat, seed=2)
    assert (high - low) > 1.3 * (naive_high - naive_low)
    assert cluster_bootstrap_ci(per_problem, seed=2) == (estimate, low, high)


def test_cluster_bootstrap_sample_weighting_is_the_pooled_mean():
    per_problem = [[1.0, 1.0, 1.0, 1.0], [0.0], [0.0, 1.0]]
    estimate, low, high = cluster_bootstrap_ci(per_problem, weighting="sample", n_boot=500, seed=0)
    assert estimate == pytest.approx(5 / 7) and low <= estimate <= high
    problem_estimate, _, _ = cluster_bootstrap_ci(per_problem, n_boot=500, seed=0)
    assert problem_estimate == pytest.approx((1 + 0 + 0.5) / 3)
    with pytest.raises(StatsInputError):
        cluster_bootstrap_ci([[1.0], []])
    with pytest.raises(StatsInputError):
        cluster_bootstrap_ci(per_problem, weighting="tokens")  # type: ignore[arg-type]


def test_paired_bootstrap_detects_a_small_consistent_improvement():
    rng = np.random.default_rng(4)
    difficulty = rng.uniform(0, 1, size=300)  # large between-problem spread, shared by both systems
    a = difficulty + 0.03 + rng.normal(0, 0.02, size=300)
    b = difficulty
    diff, low, high = paired_bootstrap_diff(list(a), list(b), n_boot=1000, seed=0, confidence=0.95)
    assert diff == pytest.approx(float(np.mean(a - b)))
    assert 0 < low <= diff <= high
    assert paired_bootstrap_diff(list(a), list(b), n_boot=1000, seed=0) == (diff, low, high)
    # Unpaired, the same difference is buried in the problem spread.
    _, a_low, a_high = mean_ci_bootstrap(a, seed=0)
    _, b_low, b_high = mean_ci_bootstrap(b, seed=0)
    assert a_low < b_high
    with pytest.raises(StatsInputError):
        paired_bootstrap_diff([1.0, 2.0], [1.0])


# --------------------------------------------------------------------------------------------------
# McNemar
# --------------------------------------------------------------------------------------------------


def test_mcnemar_exact_hand_values():
    # n = 10 discordant pairs, min(b, c) = 1: p = 2 (C(10,0) + C(10,1)) / 2^10 = 22/1024.
    assert mcnemar_exact(1, 9) == 0.021484375
    assert mcnemar_exact(9, 1) == 0.021484375
    # n = 10, min = 2: p = 2 (1 + 10 + 45) / 1024 = 112/1024.
    assert mcnemar_exact(2, 8) == 112 / 1024
    # n = 5, min = 0: p = 2 / 32.
    assert mcnemar_exact(0, 5) == 0.0625
    # Balanced or empty: no evidence of a difference.
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 1) == 1.0
    # Large counts do not overflow; close to the normal approximation z = 100 / sqrt(2100) ≈ 2.18.
    p = mcnemar_exact(1000, 1100)
    assert p == pytest.approx(2 * normal_cdf(-(100 - 1) / math.sqrt(2100)), rel=0.05)
    with pytest.raises(StatsInputError):
        mcnemar_exact(-1, 3)


def test_mcnemar_from_pairs_counts_discordant_pairs():
    a = [True, True, True, False, False, True, False]
    b = [True, False, False, True, False, False, False]
    assert mcnemar_from_pairs(a, b) == (3, 1, mcnemar_exact(3, 1))
    assert mcnemar_exact(3, 1) == 2 * (1 + 4) / 16
    with pytest.raises(StatsInputError):
        mcnemar_from_pairs([True], [True, False])


# --------------------------------------------------------------------------------------------------
# Agreement: Cohen's kappa, Krippendorff's alpha, self-consistency
# --------------------------------------------------------------------------------------------------


def test_cohens_kappa_textbook_2x2_example():
    # The usual worked example (e.g. Wikipedia, "Cohen's kappa"): 50 items; both yes 20,
    # A yes / B no 5, A no / B yes 10, both no 15.
    # p_o = (20 + 15) / 50 = 0.7; A says yes 25/50, B says yes 30/50;
    # p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    r1 = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    r2 = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohens_kappa(r1, r2) == pytest.approx(0.4)


def test_weighted_kappa_hand_example():
    # Pairs (0,0) (0,1) (1,1) (1,2) (2,2) (2,2). Marginals: r1 = 1/3 each; r2 = 1/6, 2/6, 3/6.
    # Unweighted: p_o = 4/6, p_e = 1/3 (1/6 + 2/6 + 3/6) = 1/3, kappa = (2/3 - 1/3) / (2/3) = 0.5.
    # Linear (w = |i-j|/2): observed 2 * 0.5 / 6 = 1/6; expected 1/3 * (1/6*1.5 + 2/6*1 + 3/6*1.5)
    #   = 4/9; kappa = 1 - (1/6) / (4/9) = 0.625.
    # Quadratic (w = (i-j)^2/4): observed 2 * 0.25 / 6 = 1/12; expected
    #   1/3 * (1/6*1.25 + 2/6*0.5 + 3/6*1.25) = 1/3; kappa = 1 - (1/12) / (1/3) = 0.75.
    r1 = [0, 0, 1, 1, 2, 2]
    r2 = [0, 1, 1, 2, 2, 2]
    assert cohens_kappa(r1, r2) == pytest.approx(0.5)
    assert cohens_kappa(r1, r2, weights="linear") == pytest.approx(0.625)
    assert cohens_kappa(r1, r2, weights="quadratic") == pytest.approx(0.75)


def test_quadratic_kappa_equals_its_moment_form():
    # Quadratic-weighted kappa on equally spaced labels equals 2 cov / (var1 + var2 + (mean1 - mean2)^2)
    # with population moments (Fleiss & Cohen 1973), an independent way to compute it.
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(1, 6, size=40)
        y = np.clip(x + rng.integers(-1, 2, size=40), 1, 5)
        moment = (
            2 * np.mean((x - x.mean()) * (y - y.mean())) / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
        )
        got = cohens_kappa(list(x), list(y), weights="quadratic", labels=[1, 2, 3, 4, 5])
        assert got == pytest.approx(moment, abs=1e-12)


def test_kappa_conventions():
    assert cohens_kappa([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert math.isnan(cohens_kappa([2, 2, 2], [2, 2, 2]))  # no chance disagreement: undefined
    # None (a failed judgment) drops the pair.
    assert cohens_kappa([1, None, 2, 1], [1, 3, 2, None]) == pytest.approx(1.0)
    # The full scale as labels changes linear weights when points of it were never used.
    r1, r2 = [1, 2, 5, 5], [2, 1, 5, 2]
    assert cohens_kappa(r1, r2, weights="linear") != pytest.approx(
        cohens_kappa(r1, r2, weights="linear", labels=[1, 2, 3, 4, 5])
    )
    with pytest.raises(StatsInputError):
        cohens_kappa([1, 7], [1, 2], labels=[1, 2, 3])
    with pytest.raises(StatsInputError):
        cohens_kappa([1], [1, 2])
    with pytest.raises(StatsInputError):
        cohens_kappa([1, 2], [2, 1], weights="cubic")  # type: ignore[arg-type]


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers, 12
# units, missing data. Reported there: nominal 0.743, ordinal 0.815, interval 0.849, ratio 0.797.
KRIPPENDORFF_EXAMPLE = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


@pytest.mark.parametrize(
    "level,value", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)]
)
def test_krippendorff_alpha_paper_example(level, value):
    assert round(krippendorff_alpha(KRIPPENDORFF_EXAMPLE, level), 3) == value


def test_krippendorff_alpha_interval_by_hand():
    # Raters [1, 2, 3] and [1, 2, 4]. Coincidences: o_11 = 2, o_22 = 2, o_34 = o_43 = 1; n = 6,
    # values {1, 1, 2, 2, 3, 4}. Observed: sum o (c-k)^2 = 1 + 1 = 2. Expected: over unordered value
    # pairs n_c n_k (c-k)^2 = (1,2) 4 + (1,3) 8 + (1,4) 18 + (2,3) 2 + (2,4) 8 + (3,4) 1 = 41, ordered 82.
    # alpha = 1 - (n - 1) * 2 / 82 = 1 - 10/82 = 72/82.
    assert krippendorff_alpha([[1, 2, 3], [1, 2, 4]], "interval") == pytest.approx(72 / 82)
    # Float NaN counts as missing, like None.
    assert krippendorff_alpha([[1, 2, 3, 9.0], [1, 2, 4, float("nan")]], "interval") == pytest.approx(72 / 82)


def test_krippendorff_alpha_conventions():
    assert krippendorff_alpha([["a", "b", None], ["a", "b", "c"]]) == pytest.approx(1.0)
    assert math.isnan(krippendorff_alpha([[3, 3], [3, 3]]))  # no variation: undefined
    with pytest.raises(StatsInputError):
        krippendorff_alpha([[1, None], [None, 2]])  # no unit rated twice
    with pytest.raises(StatsInputError):
        krippendorff_alpha([[1, 2], [1]])
    with pytest.raises(StatsInputError):
        krippendorff_alpha([["a", "b"], ["a", "c"]], "interval")
    # Nominal alpha ignores how far apart the values are; interval alpha does not.
    close = [[1, 2, 3, 4], [1, 2, 3, 5]]
    far = [[1, 2, 3, 4], [1, 2, 3, 50]]
    assert krippendorff_alpha(close) == pytest.approx(krippendorff_alpha(far))
    assert krippendorff_alpha(close, "interval") > krippendorff_alpha(far, "interval")


def test_self_consistency_by_hand():
    repeats = [[1, 1, 1], [1, 2, None], [3, 3], [4]]  # the last item has one rating: skipped
    result = self_consistency(repeats)
    assert isinstance(result, SelfConsistency)
    assert result.n_items == 3
    assert result.pairwise_agreement == pytest.approx((1 + 0 + 1) / 3)
    assert result.mean_std == pytest.approx((0 + math.sqrt(0.5) + 0) / 3)
    assert result.alpha == pytest.approx(krippendorff_alpha([[1, 1, 3], [1, 2, 3], [1, None, None]]))
    labels = self_consistency([["pass", "pass", "fail"], ["fail", "fail"]])
    assert labels.pairwise_agreement == pytest.approx((1 / 3 + 1) / 2)
    assert math.isnan(labels.mean_std)
    with pytest.raises(StatsInputError):
        self_consistency([[1], [None, 2]])


# --------------------------------------------------------------------------------------------------
# Bradley–Terry and win/tie/loss
# --------------------------------------------------------------------------------------------------

TRUE_STRENGTHS = {"a": -1.0, "b": -0.5, "c": 0.0, "d": 0.5, "e": 1.0}


def synthetic_comparisons(games_per_pair: int, seed: int) -> list[tuple[str, str, float]]:
    rng = np.random.default_rng(seed)
    comparisons = []
    for first, second in itertools.combinations(TRUE_STRENGTHS, 2):
        p = 1 / (1 + math.exp(-(TRUE_STRENGTHS[first] - TRUE_STRENGTHS[second])))
        for _ in range(games_per_pair):
            u = rng.random()
            outcome = 0.5 if abs(u - p) < 0.05 else float(u < p)  # a few ties
            comparisons.append(
                (first, second, outcome) if rng.random() < 0.5 else (second, first, 1 - outcome)
            )
    return comparisons


def hunter_mm(comparisons, iterations=5000):
    """Hunter's (2004) MM iteration, ties as half wins: gamma_i <- W_i / sum_j n_ij / (gamma_i + gamma_j)."""
    names = sorted({x for a, b, _ in comparisons for x in (a, b)})
    wins = dict.fromkeys(names, 0.0)
    games = Counter()
    for a, b, y in comparisons:
        wins[a] += y
        wins[b] += 1 - y
        games[frozenset((a, b))] += 1
    gamma = dict.fromkeys(names, 1.0)
    for _ in range(iterations):
        gamma = {
            i: wins[i]
            / sum(n / (gamma[i] + gamma[next(iter(pair - {i}))]) for pair, n in games.items() if i in pair)
            for i in names
        }
    logs = {i: math.log(g) for i, g in gamma.items()}
    centre = sum(logs.values()) / len(logs)
    return {i: v - centre for i, v in logs.items()}


def test_bradley_terry_recovers_order_and_strengths():
    scores = bradley_terry(synthetic_comparisons(300, seed=1))
    assert sorted(scores, key=scores.get) == ["a", "b", "c", "d", "e"]
    for name, strength in TRUE_STRENGTHS.items():
        assert scores[name] == pytest.approx(strength, abs=0.2)
    assert sum(scores.values()) == pytest.approx(0.0, abs=1e-9)  # the documented anchor: mean 0


def test_bradley_terry_agrees_with_hunter_mm():
    comparisons = synthetic_comparisons(20, seed=3)
    newton = bradley_terry(comparisons, ridge=1e-10)
    mm = hunter_mm(comparisons, iterations=400)
    for name in newton:
        assert newton[name] == pytest.approx(mm[name], abs=1e-5)


def test_bradley_terry_undefeated_players_stay_finite():
    scores = bradley_terry([("A", "B", 1), ("A", "B", 1), ("A", "B", 1), ("B", "C", 1), ("B", "C", 1)])
    assert all(math.isfinite(v) for v in scores.values())
    assert scores["A"] > scores["B"] > scores["C"]
    assert bradley_terry([("x", "y", 0.5), ("y", "x", 0.5)]) == pytest.approx({"x": 0.0, "y": 0.0})
    even = bradley_terry([("x", "y", 1), ("y", "x", 1)])
    assert even["x"] == pytest.approx(even["y"])


def test_bradley_terry_scales_and_anchor():
    comparisons = synthetic_comparisons(40, seed=5)
    log_scores = bradley_terry(comparisons)
    elo = bradley_terry(comparisons, scale="elo")
    assert np.mean(list(elo.values())) == pytest.approx(1000.0)
    assert elo["e"] - elo["a"] == pytest.approx((log_scores["e"] - log_scores["a"]) * 400 / math.log(10))
    p_log = bradley_terry_probability(log_scores["e"], log_scores["a"])
    p_elo = bradley_terry_probability(elo["e"], elo["a"], scale="elo")
    assert p_log == pytest.approx(p_elo) and p_log == pytest.approx(
        1 / (1 + 10 ** ((elo["a"] - elo["e"]) / 400))
    )
    anchored = bradley_terry(comparisons, anchor="c")
    assert anchored["c"] == 0.0
    assert anchored["e"] - anchored["a"] == pytest.approx(log_scores["e"] - log_scores["a"])
    assert bradley_terry(comparisons, scale="elo", anchor="c")["c"] == 1000.0
    with pytest.raises(StatsInputError):
        bradley_terry(comparisons, anchor="nobody")
    with pytest.raises(StatsInputError):
        bradley_terry([("a", "a", 1)])
    with pytest.raises(StatsInputError):
        bradley_terry([("a", "b", 2)])
    with pytest.raises(StatsInputError):
        bradley_terry([])


def test_bradley_terry_ci_contains_estimate_reproducible_and_shrinks():
    few = synthetic_comparisons(15, seed=8)
    many = synthetic_comparisons(150, seed=8)
    ci_few = bradley_terry_ci(few, n_boot=150, seed=0)
    assert ci_few == bradley_terry_ci(few, n_boot=150, seed=0)
    point = bradley_terry(few)
    for name, (score, low, high) in ci_few.items():
        assert score == pytest.approx(point[name]) and low <= score <= high
    ci_many = bradley_terry_ci(many, n_boot=150, seed=0)
    for name in TRUE_STRENGTHS:
        assert ci_many[name][2] - ci_many[name][1] < 0.6 * (ci_few[name][2] - ci_few[name][1])
    anchored = bradley_terry_ci(few, n_boot=50, seed=0, anchor="a")
    assert anchored["a"] == (0.0, 0.0, 0.0)


def test_win_tie_loss_and_paired_outcomes():
    outcomes = paired_outcomes([3, 4, 2, 5, 1], [3, 2, 4, 4.5, 1])
    assert outcomes == [0.5, 1.0, 0.0, 1.0, 0.5]
    tally = win_tie_loss(outcomes)
    assert tally == WinTieLoss(wins=2, ties=2, losses=1)
    assert tally.n == 5 and tally.win_rate == pytest.approx(0.6)
    assert paired_outcomes([3, 5], [3.4, 4], tolerance=0.5) == [0.5, 1.0]
    assert math.isnan(win_tie_loss([]).win_rate)
    with pytest.raises(StatsInputError):
        win_tie_loss([0.3])
