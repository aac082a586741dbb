"""The statistics behind detection, origin analysis and the report.

Welch's t-test, the permutation test and the Wilson interval are SciPy's own
(``scipy.stats.ttest_ind``, ``scipy.stats.permutation_test``, ``scipy.stats.binomtest``); this module
only validates inputs at the boundary and raises ``hneurons.errors.DataError`` with a one-line
message instead of returning silent garbage. Two are kept as our own code because the library
version is measurably worse here, each with the measurement in its docstring and a test that it
equals the library to a few ulp (tests/unit/test_stats.py): :func:`auroc` (scikit-learn's is 7–16×
slower inside the bootstrap loop) and :func:`bootstrap_ci` (SciPy's draws resamples in another order
unless run one resample per batch, which is 2.4× slower). :func:`auroc` returns ``nan`` when only
one class is present, because a per-dataset table must still render when a tiny split is one-sided.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy import stats as _sps

from hneurons.errors import ConfigError, DataError

__all__ = [
    "TTestResult",
    "accuracy",
    "aurc",
    "auroc",
    "balanced_threshold_accuracy",
    "bootstrap_ci",
    "permutation_test",
    "prevalence_threshold",
    "proportion_ci",
    "random_neuron_draws",
    "risk_coverage",
    "welch_t_one_sided",
]

_ALTERNATIVES = ("less", "greater", "two-sided")


class TTestResult(NamedTuple):
    """Welch t-test outcome: statistic, p-value and Welch–Satterthwaite degrees of freedom."""

    statistic: float
    pvalue: float
    df: float


def _labels(y_true: object, name: str = "y_true") -> np.ndarray:
    """Return ``y_true`` as a bool array; accepts bools or 0/1 numbers."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {y.shape}; pass one label per example")
    if y.dtype == bool:
        return y
    if y.size and not np.isin(y, (0, 1)).all():
        bad = np.flatnonzero(~np.isin(y, (0, 1)))[0]
        raise DataError(f"{name}[{bad}] = {y[bad]!r} is not a binary label; use 0/1 or True/False")
    return y.astype(bool)


def _finite(x: object, name: str) -> np.ndarray:
    """Return ``x`` as a 1-D float64 array, refusing NaN/inf with the offending index."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise DataError(f"{name} must be one-dimensional, got shape {a.shape}")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise DataError(f"{name}[{bad[0]}] is {a[bad[0]]}; drop or impute non-finite values before computing statistics")
    return a


def _same_length(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise DataError(f"{na} has {a.shape[0]} entries but {nb} has {b.shape[0]}; they must be aligned")


def auroc(y_true: object, scores: object) -> float:
    """Area under the ROC curve via the Mann–Whitney U statistic (ties count one half).

    Equals ``sklearn.metrics.roc_auc_score`` to 2 ulp (tested on random inputs with ties) but is
    kept: it costs 0.28–0.73 ms a call against sklearn's 3.6–5.3 ms for n = 80–2,000 (7–16×; 2-core
    machine at load ~8), and detection calls it inside the bootstrap, about 28,000 times per
    evaluation set with the default 1,000 resamples and 20 random-neuron draws (n = 400: ~8 s here,
    ~2 min with sklearn).

    Returns ``nan`` when one class is missing: the AUROC is undefined there, and callers tabulate
    it next to accuracy rather than abort a whole report.
    """
    y = _labels(y_true)
    s = _finite(scores, "scores")
    _same_length(y, s, "y_true", "scores")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _sps.rankdata(s)  # average ranks handle ties exactly as U's one-half rule
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def accuracy(y_true: object, y_pred: object) -> float:
    """Fraction of predictions equal to the labels (both binary)."""
    y = _labels(y_true)
    p = _labels(y_pred, "y_pred")
    _same_length(y, p, "y_true", "y_pred")
    if y.size == 0:
        raise DataError("accuracy of an empty set is undefined; pass at least one example")
    return float((y == p).mean())


def prevalence_threshold(y_true: object, scores: object) -> float:
    """Score threshold whose predicted-positive share equals the true positive share.

    Why: the paper's probe is trained on 25 % positives (3-vs-1) but tested on balanced sets at a
    fixed 0.5 threshold (the paper (arXiv 2512.01797) §6.1.3). Matching the predicted prevalence removes that
    calibration mismatch without looking at which examples are positive.
    """
    y = _labels(y_true)
    s = _finite(scores, "scores")
    _same_length(y, s, "y_true", "scores")
    if y.size == 0:
        raise DataError("cannot choose a threshold for an empty set")
    n_pos = int(y.sum())
    if n_pos == 0:
        return float(np.inf)
    order = np.sort(s)[::-1]
    if n_pos == y.size:
        return float(np.nextafter(order[-1], -np.inf))
    # Predict positive for scores > threshold: put it halfway between the n_pos-th and next score.
    return float((order[n_pos - 1] + order[n_pos]) / 2.0)


def balanced_threshold_accuracy(y_true: object, scores: object, threshold: float | None = None) -> float:
    """Accuracy of ``scores > threshold``; by default the prevalence-matched threshold.

    See :func:`prevalence_threshold` for why this complements the paper's fixed-0.5 accuracy.
    """
    y = _labels(y_true)
    s = _finite(scores, "scores")
    thr = prevalence_threshold(y, s) if threshold is None else float(threshold)
    return accuracy(y, s > thr)


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y: object,
    s: object,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """Percentile bootstrap interval ``(point, lo, hi)`` for ``metric(y, s)``.

    Resampling is stratified by class so every replicate keeps the class counts; otherwise a
    replicate of a small balanced set can lose a class and AUROC becomes undefined.

    This is ``scipy.stats.bootstrap(method="percentile")`` with each class passed as its own sample:
    run with ``batch=1`` SciPy draws the same resamples and gives the same interval to a few ulp
    (tested). It is kept because SciPy's default batching draws in another order (every CI in an
    existing detect.json would move by resampling noise), ``batch=1`` is 2.4× slower on the AUROC
    bootstrap (1.18 s vs 0.49 s, 1,000 resamples, n = 400) and 10× on cheap metrics, SciPy refuses a
    class with a single example, and it turns one undefined replicate into a NaN interval where
    this drops it.
    """
    if n_boot < 1:
        raise ConfigError(f"n_boot={n_boot} must be >= 1")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha={alpha} must lie strictly between 0 and 1")
    yy = _labels(y, "y")
    ss = np.asarray(s)
    _same_length(yy, ss, "y", "s")
    point = float(metric(yy, ss))
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(yy), np.flatnonzero(~yy)]
    vals = np.empty(n_boot)
    for b in range(n_boot):
        idx = np.concatenate([g[rng.integers(0, g.size, g.size)] for g in groups if g.size])
        vals[b] = metric(yy[idx], ss[idx])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return point, float("nan"), float("nan")
    lo, hi = np.quantile(vals, [alpha / 2.0, 1.0 - alpha / 2.0])
    return point, float(lo), float(hi)


def proportion_ci(k: int, n: int, alpha: float = 0.05) -> tuple[float, float, float]:
    """Wilson score interval ``(k/n, lo, hi)`` (``scipy.stats.binomtest``); better than Wald near 0
    or 1 and for small n. ``n = 0`` gives NaNs rather than an error: an empty cell in a table."""
    if n < 0 or k < 0 or k > n:
        raise DataError(f"proportion_ci needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    ci = _sps.binomtest(int(k), int(n)).proportion_ci(confidence_level=1.0 - alpha, method="wilson")
    return k / n, float(ci.low), float(ci.high)


def welch_t_one_sided(a: object, b: object, alternative: str = "less") -> TTestResult:
    """Welch's unequal-variance t-test of mean(a) vs mean(b) (``scipy.stats.ttest_ind``).

    ``alternative="less"`` tests mean(a) < mean(b) — the paper's "H-neurons drift less" claim
    (the paper (arXiv 2512.01797) §6.3.2).
    """
    if alternative not in _ALTERNATIVES:
        raise ConfigError(f"alternative={alternative!r} is not one of {_ALTERNATIVES}")
    x = _finite(a, "a")
    z = _finite(b, "b")
    if x.size < 2 or z.size < 2:
        raise DataError(f"Welch t-test needs >= 2 values per group, got {x.size} and {z.size}")
    if x.var() == 0.0 and z.var() == 0.0:
        raise DataError("Welch t-test is undefined: both groups have zero variance")
    with warnings.catch_warnings():  # near-identical drifts: SciPy warns, the result stands
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        res = _sps.ttest_ind(x, z, equal_var=False, alternative=alternative)
    return TTestResult(float(res.statistic), float(res.pvalue), float(res.df))


def _mean_gap(x: np.ndarray, z: np.ndarray, axis: int) -> np.ndarray:
    return x.mean(axis=axis) - z.mean(axis=axis)


def permutation_test(
    a: object, b: object, n_perm: int = 10000, seed: int = 0, alternative: str = "two-sided"
) -> tuple[float, float]:
    """Permutation test on the difference of means (``scipy.stats.permutation_test``); returns
    ``(mean(a) - mean(b), p)``.

    Monte-Carlo p-values count the observed labelling as one permutation, ``(1 + #extreme) /
    (1 + n_perm)``, so they are never zero; when ``n_perm`` covers every distinct split SciPy
    enumerates them and the p-value is exact. Two-sided is twice the smaller one-sided p. SciPy's is
    2–3× slower than the hand-written loop it replaced (0.9 s vs 0.4 s for 200 + 300 values and
    10,000 permutations) but nothing on a hot path calls it; it gives the same one-sided p-values
    for the same seed.
    """
    if alternative not in _ALTERNATIVES:
        raise ConfigError(f"alternative={alternative!r} is not one of {_ALTERNATIVES}")
    if n_perm < 1:
        raise ConfigError(f"n_perm={n_perm} must be >= 1")
    x = _finite(a, "a")
    z = _finite(b, "b")
    if x.size == 0 or z.size == 0:
        raise DataError(f"permutation test needs non-empty groups, got {x.size} and {z.size}")
    res = _sps.permutation_test((x, z), _mean_gap, permutation_type="independent", vectorized=True,
                                n_resamples=n_perm, alternative=alternative, rng=np.random.default_rng(seed))
    return float(res.statistic), float(res.pvalue)


def risk_coverage(correct: object, confidence: object) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy of the most-confident fraction of answers, for every achievable coverage.

    Answers are sorted by decreasing confidence; tied confidences are admitted together (a
    threshold cannot split them), so the curve has one point per distinct confidence value.
    Returns ``(coverage, accuracy_at_coverage)``, both increasing in coverage order.
    """
    c = _labels(correct, "correct")
    conf = _finite(confidence, "confidence")
    _same_length(c, conf, "correct", "confidence")
    if c.size == 0:
        raise DataError("risk_coverage of an empty set is undefined; pass at least one answer")
    order = np.argsort(-conf, kind="stable")
    conf_sorted = conf[order]
    hits = np.cumsum(c[order])
    ends = np.flatnonzero(np.r_[conf_sorted[1:] != conf_sorted[:-1], True])  # last index of each tie group
    k = ends + 1
    return k / c.size, hits[ends] / k


def aurc(correct: object, confidence: object) -> float:
    """Area under the accuracy–coverage curve (step rule from coverage 0 to 1); higher is better.

    Each tie group contributes its accuracy times its share of answers, so with distinct
    confidences this is the mean over k of the accuracy of the top-k answers.
    """
    cov, acc = risk_coverage(correct, confidence)
    widths = np.diff(np.r_[0.0, cov])
    return float((acc * widths).sum())


def random_neuron_draws(n_neurons: int, k: int, exclude: object, n_draws: int, seed: int,
                        independent: bool = False) -> np.ndarray:
    """``[n_draws, k]`` sorted neuron sets, each uniform without replacement over the neurons not in
    ``exclude``: the random-neuron control of detection, transfer and intervention.

    By default one seeded stream draws the sets in turn (the detection and transfer baselines, whose
    draw count is fixed by ``detect.random_draws``). ``independent=True`` seeds draw ``i`` with
    ``[seed, i]``, so a set does not depend on how many are drawn: raising ``intervene.random_seeds``
    keeps the sets (and the generations already logged for them) of the smaller run.
    """
    excl = np.unique(np.asarray(exclude, dtype=np.int64))
    pool = np.setdiff1d(np.arange(n_neurons, dtype=np.int64), excl, assume_unique=True)
    if k < 1 or n_draws < 1:
        raise ConfigError(f"random baseline needs k >= 1 neurons and >= 1 draw, got k={k}, draws={n_draws}")
    if k > pool.size:
        raise DataError(f"cannot draw {k} random neurons from the {pool.size} that are not H-Neurons")
    if independent:
        return np.stack([np.sort(np.random.default_rng([seed, i]).choice(pool, size=k, replace=False))
                         for i in range(n_draws)])
    rng = np.random.default_rng(seed)
    return np.stack([np.sort(rng.choice(pool, k, replace=False)) for _ in range(n_draws)])
