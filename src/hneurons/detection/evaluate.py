"""Every method on one evaluation set: fit once on the training answers, score, summarise.

The detect stage calls :func:`fit_methods` once and :func:`evaluate_methods` per set; a method
that cannot be fitted (e.g. no H-Neurons) is reported by name and reason instead of failing the
whole comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hneurons.detection.methods import BASELINES, EvalData, Scorer, TrainData
from hneurons.detection.metrics import score_metrics, selective_answering
from hneurons.errors import HNeuronsError

RC_METHODS = ("h_neurons", "h_neurons_full_l1", "random", "logprob", "entropy")
"""The methods whose selective-answering curves the report draws."""


def fit_methods(train: TrainData, log: Callable[[str], None]) -> tuple[dict[str, Scorer], dict[str, str]]:
    """Each registered method fitted on ``train``; the ones that failed, with their reason."""
    scorers, errors = {}, {}
    for name, b in BASELINES.items():
        try:
            scorers[name] = b.fit(train)
        except HNeuronsError as exc:
            errors[name] = str(exc)
            log(f"[detect] method {name} not fitted: {exc}")
    return scorers, errors


@dataclass
class SetScores:
    """Per method: metrics on the balanced items and the raw scores of every scored item."""

    metrics: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)


def evaluate_methods(scorers: dict[str, Scorer], ev: EvalData, balanced: np.ndarray, y: np.ndarray,
                     n_boot: int, seed: int) -> SetScores:
    """Score every item of ``ev`` with every method; metrics on the rows ``balanced`` (labels ``y``)."""
    out = SetScores()
    for m, sc in scorers.items():
        s = np.asarray(sc.score(ev), dtype=np.float64)
        out.scores[m] = s
        out.metrics[m] = score_metrics(y, s[balanced], sc.threshold, n_boot, seed)
    return out


def mean_scores(s: np.ndarray) -> np.ndarray:
    """One score per item (the mean over draws of the random baseline)."""
    return s.mean(axis=1) if s.ndim == 2 else s


def risk_coverage(correct: np.ndarray, scores: dict[str, np.ndarray], rows: np.ndarray,
                  n_boot: int, seed: int) -> dict[str, Any]:
    """Selective answering of the :data:`RC_METHODS` that were fitted, on the items ``rows``."""
    return {m: selective_answering(correct, scores[m][rows], n_boot, seed) for m in RC_METHODS if m in scores}
