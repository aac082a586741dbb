"""hneurons.stats against hand-computed values and scipy/sklearn references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from hneurons import stats as S
from hneurons.errors import ConfigError, DataError


def test_auroc_hand_value_with_ties():
    # positives {0.8, 0.4}, negatives {0.4, 0.1}: pairs (0.8>0.4)=1, (0.8>0.1)=1, (0.4=0.4)=0.5, (0.4>0.1)=1 -> 3.5/4
    assert S.auroc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(0.875)


def test_auroc_matches_sklearn_random():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y * 0.5, 1)  # rounding creates many ties
    assert S.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auroc_one_class_is_nan_and_nan_scores_raise():
    assert math.isnan(S.auroc([1, 1, 1], [0.1, 0.2, 0.3]))
    with pytest.raises(DataError, match=r"scores\[1\]"):
        S.auroc([0, 1], [0.1, float("nan")])
    with pytest.raises(DataError, match="aligned"):
        S.auroc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(DataError, match="binary"):
        S.auroc([0, 2], [0.1, 0.2])


def test_accuracy_and_balanced_threshold():
    assert S.accuracy([1, 0, 1, 0], [1, 1, 1, 0]) == 0.75
    # All scores below 0.5 (the 3-vs-1 calibration problem): fixed threshold gives 50 %,
    # the prevalence-matched threshold ranks correctly -> 100 %.
    y = [1, 1, 0, 0]
    s = [0.40, 0.35, 0.2, 0.1]
    assert S.balanced_threshold_accuracy(y, s, threshold=0.5) == 0.5
    assert S.prevalence_threshold(y, s) == pytest.approx(0.275)
    assert S.balanced_threshold_accuracy(y, s) == 1.0
    with pytest.raises(DataError):
        S.accuracy([], [])


def test_bootstrap_ci_contains_point_and_is_stratified():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(40), np.zeros(40)]
    s = rng.normal(size=80) + y
    seen = []

    def metric(yy, ss):
        seen.append(int(yy.sum()))
        return S.auroc(yy, ss)

    point, lo, hi = S.bootstrap_ci(metric, y, s, n_boot=200, seed=0)
    assert lo <= point <= hi
    assert point == pytest.approx(roc_auc_score(y, s))
    assert set(seen) == {40}  # every replicate keeps 40 positives
    # Same seed -> same interval.
    assert S.bootstrap_ci(S.auroc, y, s, n_boot=200, seed=0) == S.bootstrap_ci(S.auroc, y, s, n_boot=200, seed=0)
    with pytest.raises(ConfigError):
        S.bootstrap_ci(S.auroc, y, s, alpha=1.5)


def test_wilson_interval_hand_value():
    # Wilson 95 % for 8/10: centre = (0.8 + 1.9208/10)/1.38415 ... known value (0.4902, 0.9433)
    p, lo, hi = S.proportion_ci(8, 10)
    assert p == 0.8
    assert lo == pytest.approx(0.4902, abs=1e-4)
    assert hi == pytest.approx(0.9433, abs=1e-4)
    p0, lo0, hi0 = S.proportion_ci(0, 20)
    assert lo0 == 0.0 and 0 < hi0 < 0.2
    assert all(math.isnan(v) for v in S.proportion_ci(0, 0))
    with pytest.raises(DataError):
        S.proportion_ci(5, 3)


@pytest.mark.parametrize("alternative", ["less", "greater", "two-sided"])
def test_welch_matches_scipy(alternative):
    rng = np.random.default_rng(2)
    a = rng.normal(0.0, 1.0, 30)
    b = rng.normal(0.4, 2.0, 50)
    ours = S.welch_t_one_sided(a, b, alternative=alternative)
    ref = sps.ttest_ind(a, b, equal_var=False, alternative=alternative)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert ours.pvalue == pytest.approx(ref.pvalue, rel=1e-8)


def test_welch_bad_input():
    with pytest.raises(DataError):
        S.welch_t_one_sided([1.0], [1.0, 2.0])
    with pytest.raises(ConfigError):
        S.welch_t_one_sided([1.0, 2.0], [1.0, 2.0], alternative="up")


def test_permutation_test_exact_small_case():
    # a = {3, 4}, b = {0, 1}: of the 6 equally likely splits only the observed one has a mean diff >= 3,
    # so the exact one-sided p is 1/6; 20,000 permutations cover all 6 splits, so SciPy enumerates them.
    obs, p = S.permutation_test([3, 4], [0, 1], n_perm=20000, seed=0, alternative="greater")
    assert obs == 3.0
    assert p == pytest.approx(1 / 6, abs=1e-12)
    _, p2 = S.permutation_test([3, 4], [0, 1], n_perm=20000, seed=0, alternative="two-sided")
    assert p2 == pytest.approx(2 / 6, abs=1e-12)
    _, pl = S.permutation_test([3, 4], [0, 1], n_perm=2000, seed=0, alternative="less")
    assert pl == pytest.approx(1.0, abs=1e-9)
    # Monte Carlo (far fewer permutations than splits): never 0, and tiny for a clear gap
    _, pm = S.permutation_test(np.arange(30.0) + 100, np.arange(30.0), n_perm=999, seed=0, alternative="greater")
    assert pm == 1 / 1000


def test_risk_coverage_and_aurc_hand_values():
    correct = [True, False, True, True]
    conf = [0.9, 0.8, 0.7, 0.1]
    cov, acc = S.risk_coverage(correct, conf)
    np.testing.assert_allclose(cov, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(acc, [1.0, 0.5, 2 / 3, 0.75])
    assert S.aurc(correct, conf) == pytest.approx((1.0 + 0.5 + 2 / 3 + 0.75) / 4)
    # Ties enter together: one point at coverage 0.5 with accuracy 0.5.
    cov_t, acc_t = S.risk_coverage([True, False, True, True], [0.9, 0.9, 0.5, 0.5])
    np.testing.assert_allclose(cov_t, [0.5, 1.0])
    np.testing.assert_allclose(acc_t, [0.5, 0.75])
    assert S.aurc([True, False, True, True], [0.9, 0.9, 0.5, 0.5]) == pytest.approx(0.5 * 0.5 + 0.75 * 0.5)


# ----------------------------------------------------------------------------------------------
# The library references on random inputs: each statistic equals scikit-learn/SciPy's to rounding.


def _random_labels_and_scores(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = int(rng.integers(2, 300))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]  # both classes present
    s = np.round(rng.normal(size=n) + y * rng.uniform(0, 2), int(rng.integers(0, 4)))  # coarse rounding = ties
    return y, s


def test_auroc_equals_sklearn_on_random_inputs():
    rng = np.random.default_rng(10)
    for _ in range(300):
        y, s = _random_labels_and_scores(rng)
        # the U statistic and sklearn's trapezoid sum round differently: at most 2 ulp apart
        assert abs(S.auroc(y, s) - roc_auc_score(y, s)) <= 4.5e-16


@pytest.mark.parametrize("alternative", ["less", "greater", "two-sided"])
def test_welch_equals_scipy_on_random_inputs(alternative):
    rng = np.random.default_rng(11)
    for _ in range(200):
        a = rng.normal(0.0, rng.uniform(0.1, 3.0), int(rng.integers(2, 80)))
        b = rng.normal(rng.normal(), rng.uniform(0.1, 3.0), int(rng.integers(2, 80)))
        ours = S.welch_t_one_sided(a, b, alternative=alternative)
        ref = sps.ttest_ind(a, b, equal_var=False, alternative=alternative)
        assert ours.statistic == pytest.approx(ref.statistic, rel=1e-12, abs=1e-300)
        assert ours.pvalue == pytest.approx(ref.pvalue, rel=1e-12, abs=1e-300)
        assert ours.df == pytest.approx(ref.df, rel=1e-12)


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.01])
def test_wilson_equals_scipy_binomtest(alpha):
    rng = np.random.default_rng(14)
    ns = rng.integers(1, 2000, 150)
    pairs = [(int(rng.integers(0, n + 1)), int(n)) for n in ns] + [(0, 1), (1, 1), (0, 37), (37, 37), (1, 2)]
    for k, n in pairs:
        p, lo, hi = S.proportion_ci(k, n, alpha)
        ref = sps.binomtest(k, n).proportion_ci(confidence_level=1 - alpha, method="wilson")
        assert p == k / n
        assert abs(lo - ref.low) <= 5e-16 and abs(hi - ref.high) <= 5e-16, (k, n)


def _monte_carlo_permutation(a, b, n_perm, seed, alternative):
    """The hand-written test stats.permutation_test used before it called SciPy: shuffle the pooled
    values n_perm times, count gaps at least as extreme, p = (1 + hits) / (1 + n_perm)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled = np.concatenate([a, b])
    obs = a.mean() - b.mean()
    perm = np.random.default_rng(seed).permuted(np.broadcast_to(pooled, (n_perm, pooled.size)), axis=1)
    diff = perm[:, : a.size].mean(axis=1) - perm[:, a.size:].mean(axis=1)
    eps = 1e-12 * max(1.0, abs(obs))
    hits = (diff <= obs + eps) if alternative == "less" else (diff >= obs - eps)
    return obs, (1 + int(hits.sum())) / (1 + n_perm)


@pytest.mark.parametrize("alternative", ["less", "greater"])
def test_permutation_one_sided_equals_the_former_monte_carlo(alternative):
    rng = np.random.default_rng(12)
    for _ in range(20):
        a = rng.normal(0.0, 1.0, int(rng.integers(5, 60)))
        b = rng.normal(0.3, 1.5, int(rng.integers(5, 60)))
        obs, p = S.permutation_test(a, b, n_perm=2000, seed=3, alternative=alternative)
        ref_obs, ref_p = _monte_carlo_permutation(a, b, 2000, 3, alternative)
        assert obs == pytest.approx(ref_obs, abs=1e-15) and p == ref_p


def _scipy_bootstrap(metric, y, s, n_boot, seed, alpha):
    """scipy.stats.bootstrap with each class as its own sample (stratified) and one resample per
    batch, which draws the random indices in the same order as hneurons.stats.bootstrap_ci."""
    y = np.asarray(y).astype(bool)
    groups = tuple(g for g in (np.flatnonzero(y), np.flatnonzero(~y)) if g.size)

    def stat(*resampled):
        idx = np.concatenate(resampled)
        return metric(y[idx], s[idx])

    ci = sps.bootstrap(groups, stat, n_resamples=n_boot, batch=1, paired=False, vectorized=False,
                       method="percentile", confidence_level=1 - alpha, rng=np.random.default_rng(seed))
    return ci.confidence_interval


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_bootstrap_equals_scipy_on_random_inputs(alpha):
    rng = np.random.default_rng(13)
    for seed in range(6):
        y, s = _random_labels_and_scores(rng)
        point, lo, hi = S.bootstrap_ci(S.auroc, y, s, n_boot=100, seed=seed, alpha=alpha)
        ref = _scipy_bootstrap(S.auroc, y, s, 100, seed, alpha)
        assert point == S.auroc(y, s)
        # the same resamples; the two percentile interpolations round differently (a few ulp)
        assert abs(lo - ref.low) <= 1e-15 and abs(hi - ref.high) <= 1e-15, (seed, lo, ref.low, hi, ref.high)
