"""Detection numbers with bootstrap CIs: accuracy, AUROC, prevalence-threshold accuracy, selective answering.

A score matrix ``[n, draws]`` (the random-neuron baseline) is averaged over draws inside every
bootstrap replicate, so its CI covers item sampling and its ``*_sd`` the spread over draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hneurons import stats


def _columns(s: np.ndarray) -> np.ndarray:
    return s[:, None] if s.ndim == 1 else s


def score_metrics(y: Sequence[int], scores: np.ndarray, threshold: float, n_boot: int, seed: int) -> dict[str, Any]:
    """Accuracy (``score > threshold``), AUROC and prevalence-threshold accuracy with 95% bootstrap CIs.

    ``scores`` ``[n, draws]`` (random baseline): each number is the mean over draws, its CI comes
    from resampling items with the mean over draws recomputed per replicate, and ``*_sd`` is the sd
    over draws. The prevalence threshold removes the 3-vs-1 calibration shift.
    """
    yy = np.asarray(y, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)

    def acc(yb: np.ndarray, sb: np.ndarray) -> float:
        return float(np.mean([stats.accuracy(yb, c > threshold) for c in _columns(sb).T]))

    def auc(yb: np.ndarray, sb: np.ndarray) -> float:
        return float(np.mean([stats.auroc(yb, c) for c in _columns(sb).T]))

    def prev(yb: np.ndarray, sb: np.ndarray) -> float:
        return float(np.mean([stats.balanced_threshold_accuracy(yb, c) for c in _columns(sb).T]))

    out: dict[str, Any] = {"n": int(yy.size), "threshold": threshold}
    for key, fn in (("accuracy", acc), ("auroc", auc), ("accuracy_prevalence", prev)):
        point, lo, hi = stats.bootstrap_ci(fn, yy, s, n_boot=n_boot, seed=seed)
        out[key], out[f"{key}_ci"] = point, [lo, hi]
    if s.ndim == 2:
        out["draws"] = int(s.shape[1])
        out["accuracy_sd"] = float(np.std([stats.accuracy(yy, c > threshold) for c in s.T], ddof=1)) if s.shape[1] > 1 else 0.0
        out["auroc_sd"] = float(np.std([stats.auroc(yy, c) for c in s.T], ddof=1)) if s.shape[1] > 1 else 0.0
    return out


def selective_answering(correct: Sequence[int], halluc_score: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """Accuracy of the answered items vs the fraction answered, abstaining on the highest
    hallucination scores first; area under that curve (higher = better) with a bootstrap CI.

    ``halluc_score`` ``[n, draws]`` (random baseline): the curve and CI use the mean score over
    draws; ``aurc_draws_mean``/``aurc_draws_sd`` give the per-draw areas.
    """
    c = np.asarray(correct, dtype=np.int64)
    s = np.asarray(halluc_score, dtype=np.float64)
    conf = -(s.mean(axis=1) if s.ndim == 2 else s)
    cov, acc = stats.risk_coverage(c, conf)
    point, lo, hi = stats.bootstrap_ci(lambda yb, sb: stats.aurc(yb, sb), c, conf, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {"coverage": cov.tolist(), "accuracy": acc.tolist(), "aurc": point, "aurc_ci": [lo, hi]}
    if s.ndim == 2:
        per = [stats.aurc(c, -col) for col in s.T]
        out["aurc_draws_mean"] = float(np.mean(per))
        out["aurc_draws_sd"] = float(np.std(per, ddof=1)) if len(per) > 1 else 0.0
    return out
