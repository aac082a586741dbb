"""Small, dependency-light statistics used by detection, origin analysis and the report.

Everything here is plain numpy (scipy only for the t distribution) so that each number in the
report can be traced to a short formula. Functions validate their inputs and raise
``hneurons.errors.DataError`` with a one-line message instead of returning silent garbage; the one
deliberate exception is :func:`auroc`, which returns ``nan`` when only one class is present, because
a per-dataset table must still render when a tiny split happens to be one-sided.
"""

from __future__ import annotations

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
    fixed 0.5 threshold (PAPER.md §8 item 22). Matching the predicted prevalence removes that
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
    """Wilson score interval ``(k/n, lo, hi)``; better than Wald near 0 or 1 and for small n."""
    if n < 0 or k < 0 or k > n:
        raise DataError(f"proportion_ci needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    z = float(_sps.norm.ppf(1.0 - alpha / 2.0))
    p = k / n
    den = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return float(p), float(max(0.0, centre - half)), float(min(1.0, centre + half))


def welch_t_one_sided(a: object, b: object, alternative: str = "less") -> TTestResult:
    """Welch's unequal-variance t-test of mean(a) vs mean(b).

    ``alternative="less"`` tests mean(a) < mean(b) — the paper's "H-neurons drift less" claim
    (PAPER.md §7.2).
    """
    if alternative not in _ALTERNATIVES:
        raise ConfigError(f"alternative={alternative!r} is not one of {_ALTERNATIVES}")
    x = _finite(a, "a")
    z = _finite(b, "b")
    if x.size < 2 or z.size < 2:
        raise DataError(f"Welch t-test needs >= 2 values per group, got {x.size} and {z.size}")
    va, vb = x.var(ddof=1) / x.size, z.var(ddof=1) / z.size
    se2 = va + vb
    if se2 == 0.0:
        raise DataError("Welch t-test is undefined: both groups have zero variance")
    t = (x.mean() - z.mean()) / np.sqrt(se2)
    df = se2**2 / (va**2 / (x.size - 1) + vb**2 / (z.size - 1))
    if alternative == "less":
        p = _sps.t.cdf(t, df)
    elif alternative == "greater":
        p = _sps.t.sf(t, df)
    else:
        p = 2.0 * _sps.t.sf(abs(t), df)
    return TTestResult(float(t), float(p), float(df))


def permutation_test(
    a: object, b: object, n_perm: int = 10000, seed: int = 0, alternative: str = "two-sided"
) -> tuple[float, float]:
    """Permutation test on the difference of means; returns ``(mean(a) - mean(b), p)``.

    The p-value counts the observed labelling as one permutation, ``(1 + #extreme) / (1 + n_perm)``,
    so it is never zero and is valid for any ``n_perm``.
    """
    if alternative not in _ALTERNATIVES:
        raise ConfigError(f"alternative={alternative!r} is not one of {_ALTERNATIVES}")
    if n_perm < 1:
        raise ConfigError(f"n_perm={n_perm} must be >= 1")
    x = _finite(a, "a")
    z = _finite(b, "b")
    if x.size == 0 or z.size == 0:
        raise DataError(f"permutation test needs non-empty groups, got {x.size} and {z.size}")
    pooled = np.concatenate([x, z])
    obs = float(x.mean() - z.mean())
    rng = np.random.default_rng(seed)
    total = pooled.sum()
    hits = 0
    eps = 1e-12 * max(1.0, abs(obs))  # equal-statistic permutations count as extreme
    chunk = max(1, min(n_perm, 2_000_000 // max(pooled.size, 1)))
    done = 0
    while done < n_perm:
        m = min(chunk, n_perm - done)
        perm = rng.permuted(np.broadcast_to(pooled, (m, pooled.size)), axis=1)
        sa = perm[:, : x.size].sum(axis=1)
        diff = sa / x.size - (total - sa) / z.size
        if alternative == "less":
            hits += int((diff <= obs + eps).sum())
        elif alternative == "greater":
            hits += int((diff >= obs - eps).sum())
        else:
            hits += int((np.abs(diff) >= abs(obs) - eps).sum())
        done += m
    return obs, (1 + hits) / (1 + n_perm)


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
