"""Every estimator in pspo_eval.stats, checked against an independent library used as an oracle.

The package computes its statistics itself (numpy and the standard library only); these tests hold
those numbers to scipy, statsmodels, scikit-learn and ``krippendorff`` (all in the dev extra) on
random and hand-picked inputs. Deterministic estimators must agree to rounding; bootstrap intervals
use other random streams than the oracle, so they are compared with an exact or asymptotic oracle
at a tolerance of about three Monte Carlo standard errors (2% of the width), tight enough that a wrong quantile level, a
lost pairing or a resampling of samples instead of problems fails.
"""

from __future__ import annotations

import itertools
import math
import statistics

import krippendorff
import numpy as np
import pytest
import statsmodels.api as sm
from scipy import special
from scipy import stats as sps
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score, confusion_matrix
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.inter_rater import cohens_kappa as sm_cohens_kappa
from statsmodels.stats.proportion import proportion_confint

from pspo_eval import stats

RNG_SEEDS = range(6)


# --- pass@k and maj@k --------------------------------------------------------------------------------


@pytest.mark.parametrize("n,c,k", [(1, 0, 1), (1, 1, 1), (10, 3, 1), (10, 3, 5), (10, 7, 4), (200, 13, 50),
                                   (500, 1, 100), (1000, 999, 10)])
def test_pass_at_k_matches_exact_binomial_coefficients(n, c, k):
    exact = 1.0 - special.comb(n - c, k, exact=True) / special.comb(n, k, exact=True)
    assert stats.pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12, abs=1e-15)


def _maj_oracle(n_right: int, n_wrong: int, n_none: int, k: int) -> float:
    """Two answers and abstentions: sum over the multivariate hypergeometric law of the credit."""
    law = sps.multivariate_hypergeom(m=[n_right, n_wrong, n_none], n=k)
    total = 0.0
    for right in range(min(n_right, k) + 1):
        for wrong in range(min(n_wrong, k - right) + 1):
            none = k - right - wrong
            if none > n_none:
                continue
            credit = 1.0 if right > wrong else (0.5 if right == wrong and right > 0 else 0.0)
            total += credit * float(law.pmf([right, wrong, none]))
    return total


@pytest.mark.parametrize("n_right,n_wrong,n_none,k", [(3, 2, 0, 3), (3, 3, 0, 4), (5, 2, 3, 4), (1, 6, 2, 5),
                                                      (20, 18, 10, 16), (40, 39, 0, 64)])
def test_maj_at_k_matches_the_hypergeometric_law(n_right, n_wrong, n_none, k):
    answers = ["right"] * n_right + ["wrong"] * n_wrong + [None] * n_none
    flags = [True] * n_right + [False] * (n_wrong + n_none)
    assert stats.maj_at_k(answers, flags, k) == pytest.approx(_maj_oracle(n_right, n_wrong, n_none, k), rel=1e-9)


# --- the normal distribution and the Wilson interval --------------------------------------------------


def test_normal_cdf_and_quantile_match_scipy_in_the_centre_and_both_tails():
    ps = np.concatenate([np.logspace(-300, -3, 30), np.linspace(0.001, 0.999, 101), 1.0 - np.logspace(-15, -3, 13)])
    for p in ps:
        assert stats.normal_quantile(float(p)) == pytest.approx(sps.norm.ppf(p), rel=1e-12, abs=1e-13)
    for x in np.linspace(-37.0, 8.0, 91):
        assert stats.normal_cdf(float(x)) == pytest.approx(sps.norm.cdf(x), rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
def test_wilson_interval_matches_statsmodels(confidence):
    for n in (1, 2, 7, 30, 250, 1319):
        for successes in sorted({0, 1, n // 3, n // 2, n - 1, n} & set(range(n + 1))):
            low, high = proportion_confint(successes, n, alpha=1.0 - confidence, method="wilson")
            ours = stats.wilson_interval(successes, n, confidence)
            assert ours == pytest.approx((low, high), rel=1e-12, abs=1e-14), (successes, n)


# --- bootstrap intervals --------------------------------------------------------------------------------


def test_mean_bootstrap_of_binary_scores_matches_the_exact_binomial_bootstrap_law():
    # For 0/1 scores the bootstrap mean is exactly Binomial(n, p_hat) / n, so the percentile interval is
    # known in closed form; ours must be within one grid step plus Monte Carlo noise of it.
    rng = np.random.default_rng(11)
    values = (rng.random(120) < 0.37).astype(float)
    n, p_hat = values.size, values.mean()
    mean, low, high = stats.mean_ci_bootstrap(values, n_boot=20_000, seed=3)
    assert mean == pytest.approx(p_hat, rel=1e-15)
    assert low == pytest.approx(sps.binom.ppf(0.025, n, p_hat) / n, abs=1.5 / n)
    assert high == pytest.approx(sps.binom.ppf(0.975, n, p_hat) / n, abs=1.5 / n)


def test_mean_bootstrap_matches_scipy_percentile_bootstrap():
    values = np.random.default_rng(5).gamma(2.0, 1.5, size=80)
    ours = stats.mean_ci_bootstrap(values, confidence=0.9, n_boot=20_000, seed=1)
    oracle = sps.bootstrap((values,), np.mean, n_resamples=20_000, method="percentile",
                           confidence_level=0.9, rng=np.random.default_rng(2)).confidence_interval
    width = oracle.high - oracle.low
    assert ours[1:] == pytest.approx((oracle.low, oracle.high), abs=0.02 * width)


def test_cluster_bootstrap_matches_scipy_on_problem_and_sample_weighting():
    rng = np.random.default_rng(8)
    sizes = rng.integers(1, 9, size=60)
    skill = rng.random(60)
    problems = [list((rng.random(m) < s).astype(float)) for m, s in zip(sizes, skill)]
    means = np.array([np.mean(p) for p in problems])
    sums = np.array([np.sum(p) for p in problems])

    est, low, high = stats.cluster_bootstrap_ci(problems, n_boot=20_000, seed=4)
    oracle = sps.bootstrap((means,), np.mean, n_resamples=20_000, method="percentile",
                           rng=np.random.default_rng(9)).confidence_interval
    assert est == pytest.approx(means.mean(), rel=1e-14)
    assert (low, high) == pytest.approx((oracle.low, oracle.high), abs=0.02 * (oracle.high - oracle.low))

    est, low, high = stats.cluster_bootstrap_ci(problems, n_boot=20_000, seed=4, weighting="sample")
    oracle = sps.bootstrap((sums, sizes.astype(float)), lambda s, m, axis=-1: s.sum(axis) / m.sum(axis),
                           paired=True, n_resamples=20_000, method="percentile",
                           rng=np.random.default_rng(9)).confidence_interval
    assert est == pytest.approx(sums.sum() / sizes.sum(), rel=1e-14)
    assert (low, high) == pytest.approx((oracle.low, oracle.high), abs=0.02 * (oracle.high - oracle.low))


def test_paired_bootstrap_matches_scipy_paired_bootstrap():
    rng = np.random.default_rng(21)
    difficulty = rng.random(150)
    # Continuous scores sharing a per-problem difficulty: a lost pairing would widen the interval.
    a = rng.normal(difficulty, 0.3)
    b = rng.normal(difficulty * 0.8, 0.3)
    diff, low, high = stats.paired_bootstrap_diff(a, b, n_boot=20_000, seed=6)
    oracle = sps.bootstrap((a, b), lambda x, y, axis=-1: (x - y).mean(axis), paired=True, n_resamples=20_000,
                           method="percentile", rng=np.random.default_rng(7)).confidence_interval
    assert diff == pytest.approx(float((a - b).mean()), rel=1e-14)
    assert (low, high) == pytest.approx((oracle.low, oracle.high), abs=0.02 * (oracle.high - oracle.low))


# --- McNemar ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("b,c", [(0, 0), (0, 1), (1, 0), (3, 3), (2, 9), (12, 4), (40, 61), (0, 25), (300, 250)])
def test_mcnemar_exact_matches_statsmodels_and_the_binomial_test(b, c):
    expected = sm_mcnemar([[10, b], [c, 7]], exact=True).pvalue
    assert stats.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-10)
    if b + c:
        assert stats.mcnemar_exact(b, c) == pytest.approx(sps.binomtest(b, b + c, 0.5).pvalue, rel=1e-10)


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_mcnemar_from_pairs_counts_the_discordant_cells_of_the_confusion_matrix(seed):
    rng = np.random.default_rng(seed)
    a = rng.random(90) < 0.6
    b = rng.random(90) < 0.5
    table = confusion_matrix(a, b, labels=[True, False])
    got_b, got_c, p = stats.mcnemar_from_pairs(list(a), list(b))
    assert (got_b, got_c) == (table[0, 1], table[1, 0])
    assert p == pytest.approx(sm_mcnemar(table, exact=True).pvalue, rel=1e-10)


# --- agreement ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", RNG_SEEDS)
@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_cohens_kappa_matches_scikit_learn_and_statsmodels(seed, weights):
    rng = np.random.default_rng(seed)
    r1 = rng.integers(1, 6, size=70)
    r2 = np.clip(r1 + rng.integers(-1, 2, size=70), 1, 5)
    labels = [1, 2, 3, 4, 5]
    ours = stats.cohens_kappa(list(r1), list(r2), weights=weights, labels=labels)
    assert ours == pytest.approx(cohen_kappa_score(r1, r2, labels=labels, weights=weights), rel=1e-12)
    table = confusion_matrix(r1, r2, labels=labels)
    wt = {None: None, "linear": "linear", "quadratic": "quadratic"}[weights]
    assert ours == pytest.approx(sm_cohens_kappa(table, wt=wt, return_results=False), rel=1e-10)


def test_cohens_kappa_with_missing_ratings_matches_scikit_learn_on_the_complete_pairs():
    r1 = ["a", "b", None, "a", "c", "b", "a", "c", None, "b"]
    r2 = ["a", "c", "b", "a", "c", "b", None, "a", "c", "b"]
    kept = [(x, y) for x, y in zip(r1, r2) if x is not None and y is not None]
    expected = cohen_kappa_score([x for x, _ in kept], [y for _, y in kept])
    assert stats.cohens_kappa(r1, r2) == pytest.approx(expected, rel=1e-12)


def _ratings_with_gaps(seed: int, raters: int, units: int, scale: int) -> list[list[float | None]]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, scale + 1, size=units)
    rows = []
    for _ in range(raters):
        noisy = np.clip(truth + rng.integers(-1, 2, size=units), 1, scale).astype(float)
        rows.append([None if rng.random() < 0.2 else float(v) for v in noisy])
    return rows


@pytest.mark.parametrize("seed", RNG_SEEDS)
@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_krippendorff_alpha_matches_the_krippendorff_package(seed, level):
    rows = _ratings_with_gaps(seed, raters=4, units=40, scale=5)
    matrix = np.array([[np.nan if v is None else v for v in row] for row in rows])
    expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement=level)
    assert stats.krippendorff_alpha(rows, level=level) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_self_consistency_matches_the_oracles_item_by_item():
    repeats = [[4, 4, 5], [2, 2, None], [1, 3, 3, 3], [5, None, None], [3, 4, 2], [1, 1, 1]]
    usable = [[v for v in item if v is not None] for item in repeats]
    usable = [item for item in usable if len(item) >= 2]
    result = stats.self_consistency(repeats, level="interval")
    agreement = np.mean([np.mean([x == y for x, y in itertools.combinations(item, 2)]) for item in usable])
    width = max(len(item) for item in usable)
    matrix = np.array([[item[r] if r < len(item) else np.nan for item in usable] for r in range(width)], float)
    assert result.n_items == len(usable)
    assert result.pairwise_agreement == pytest.approx(agreement, rel=1e-12)
    assert result.mean_std == pytest.approx(np.mean([statistics.stdev(item) for item in usable]), rel=1e-12)
    assert result.alpha == pytest.approx(krippendorff.alpha(matrix, level_of_measurement="interval"), rel=1e-10)


# --- Bradley–Terry ------------------------------------------------------------------------------------------


def _tournament(seed: int, players: list[str], strengths: list[float], n: int, tie_share: float):
    rng = np.random.default_rng(seed)
    comparisons = []
    for _ in range(n):
        i, j = rng.choice(len(players), size=2, replace=False)
        if rng.random() < tie_share:
            comparisons.append((players[i], players[j], 0.5))
        else:
            win = rng.random() < special.expit(strengths[i] - strengths[j])
            comparisons.append((players[i], players[j], 1.0 if win else 0.0))
    return comparisons


def _design(comparisons, players):
    """One row per comparison: +1 for the first player's column, -1 for the second's."""
    x = np.zeros((len(comparisons), len(players)))
    for row, (a, b, _) in enumerate(comparisons):
        x[row, players.index(a)] = 1.0
        x[row, players.index(b)] = -1.0
    return x


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_bradley_terry_is_the_ridge_logistic_regression_of_scikit_learn(seed):
    # Our objective, loglik - ridge/2 |theta|^2, is scikit-learn's L2 logistic regression without an
    # intercept at C = 1 / ridge; a tie enters as half a win and half a loss (two weighted rows).
    players = ["base", "grpo", "gr-pspo", "noclip"]
    comparisons = _tournament(seed, players, [0.0, 0.6, 1.1, -0.4], n=300, tie_share=0.15)
    ridge = 0.5  # strong enough that a wrong penalty scale would show
    x = _design(comparisons, players)
    y = np.array([c[2] for c in comparisons])
    rows = np.concatenate([x, x])
    labels = np.concatenate([np.ones(len(y)), np.zeros(len(y))])
    weights = np.concatenate([y, 1.0 - y])
    model = LogisticRegression(C=1.0 / ridge, fit_intercept=False, tol=1e-12, max_iter=10_000)
    model.fit(rows, labels, sample_weight=weights)
    ours = stats.bradley_terry(comparisons, ridge=ridge)
    assert [ours[p] for p in players] == pytest.approx(list(model.coef_[0]), abs=1e-6)


def test_bradley_terry_elo_and_anchor_match_the_unpenalized_logit_of_statsmodels():
    players = ["base", "a", "b"]
    comparisons = _tournament(3, players, [0.0, 0.8, -0.5], n=900, tie_share=0.0)
    x = _design(comparisons, players)[:, 1:]  # the anchor's column dropped: theta_base = 0
    y = np.array([c[2] for c in comparisons])
    fit = sm.Logit(y, x).fit(disp=0, tol=1e-12)
    ours = stats.bradley_terry(comparisons, ridge=1e-9, anchor="base", scale="elo")
    elo = 1000.0 + 400.0 / math.log(10.0) * np.concatenate([[0.0], fit.params])
    assert [ours[p] for p in players] == pytest.approx(list(elo), abs=1e-3)
    # P(a beats b) is the fitted logistic curve.
    p = stats.bradley_terry_probability(ours["a"], ours["b"], scale="elo")
    assert p == pytest.approx(special.expit(fit.params[0] - fit.params[1]), rel=1e-9)


def test_bradley_terry_bootstrap_interval_agrees_with_the_wald_interval_of_statsmodels():
    # With many comparisons the percentile bootstrap and the Wald interval from the Fisher information
    # nearly coincide; an interval of the wrong level or width is off by far more than the tolerance.
    players = ["base", "a", "b"]
    comparisons = _tournament(4, players, [0.0, 0.7, -0.3], n=600, tie_share=0.0)
    x = _design(comparisons, players)[:, 1:]
    y = np.array([c[2] for c in comparisons])
    fit = sm.Logit(y, x).fit(disp=0)
    low_w, high_w = fit.conf_int(alpha=0.05).T
    ours = stats.bradley_terry_ci(comparisons, n_boot=600, seed=0, anchor="base", ridge=1e-9)
    for column, name in enumerate(players[1:]):
        score, low, high = ours[name]
        width = high_w[column] - low_w[column]
        assert score == pytest.approx(fit.params[column], abs=1e-5)
        assert (low, high) == pytest.approx((low_w[column], high_w[column]), abs=0.08 * width)


@pytest.mark.parametrize("gap", [-900.0, -120.0, 0.0, 35.0, 400.0])
def test_bradley_terry_probability_is_the_logistic_function(gap):
    assert stats.bradley_terry_probability(gap / 100, 0.0) == pytest.approx(special.expit(gap / 100), rel=1e-12)
    elo = 1.0 / (1.0 + 10.0 ** (-gap / 400.0))
    assert stats.bradley_terry_probability(1000.0 + gap, 1000.0, scale="elo") == pytest.approx(elo, rel=1e-12)
