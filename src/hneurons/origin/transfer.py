"""Backward transfer (the paper, arXiv 2512.01797 §7.1): does the instruct probe still detect
hallucinations from the base model's own activations?

The base model answers ``"{question}\\nAnswer:"`` (no chat template, stop at the first newline);
its answers are judged and balanced like the detection sets
(:func:`hneurons.labelling.items.judge_and_locate`), its own CETT features are computed, and the
instruct probe is applied unchanged (AUROC, since activation scales shift between the two
models). A random-neuron probe, fitted on the instruct features, is transferred the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hneurons.detection.methods import TrainData, refit_columns
from hneurons.detection.metrics import score_metrics
from hneurons.errors import DataError
from hneurons.probe.estimator import HNeuronProbe
from hneurons.stats import random_neuron_draws


# ---------------------------------------------------------------------------------------------
# Backward transfer
# ---------------------------------------------------------------------------------------------


def transfer_scores(probe: HNeuronProbe, X: np.ndarray) -> np.ndarray:
    """P(hallucinated) from the instruct probe applied unchanged to base-model features
    (same θ, intercept and feature indexing; no refit, no re-standardisation; the paper §7.1)."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != probe.n_features_in_:
        raise DataError(f"base-model features have shape {X.shape} but the instruct probe has "
                        f"{probe.n_features_in_} weights; the two models' neuron layouts differ")
    if not np.isfinite(X).all():
        raise DataError("base-model features contain NaN/inf (an empty answer span?); drop those items first")
    return probe.predict_proba(X)[:, 1]


def random_transfer_scores(train: TrainData, X: np.ndarray, h_idx: Sequence[int] | np.ndarray,
                           draws: int, seed: int) -> np.ndarray:
    """``[n, draws]`` scores of random-neuron probes fitted on the instruct training features and
    applied unchanged to base features: k = #H-Neurons random neurons (H-Neurons excluded), refit
    exactly like the detection stage's random baseline (:func:`hneurons.detection.methods.refit_columns`)."""
    h = np.asarray(h_idx, dtype=np.int64)
    cols = random_neuron_draws(train.answer.shape[1], int(h.size), h, draws, seed)
    X = np.asarray(X, dtype=np.float64)
    return np.column_stack([refit_columns(train, c).predict_proba(X[:, c])[:, 1] for c in cols])


def transfer_summary(y: Sequence[int], h_scores: np.ndarray, random_scores: np.ndarray | None,
                     n_boot: int, seed: int) -> dict[str, Any]:
    """``origin.json`` transfer entry of one set: AUROC/accuracy (p > 0.5) with bootstrap CIs for
    the transferred probe, and the same for the random-neuron control (mean over draws)."""
    yy = np.asarray(y, dtype=np.int64)
    m = score_metrics(yy, h_scores, 0.5, n_boot, seed)
    out: dict[str, Any] = {
        "auroc": m["auroc"], "auroc_ci": m["auroc_ci"], "accuracy": m["accuracy"], "accuracy_ci": m["accuracy_ci"],
        "accuracy_prevalence": m["accuracy_prevalence"], "n": int(yy.size),
        "n_per_class": {"0": int((yy == 0).sum()), "1": int((yy == 1).sum())},
        "random_auroc": None, "random": None,
    }
    if random_scores is not None:
        r = score_metrics(yy, random_scores, 0.5, n_boot, seed)
        out["random_auroc"] = r["auroc"]
        out["random"] = {k: r[k] for k in ("auroc", "auroc_ci", "auroc_sd", "accuracy", "accuracy_ci", "draws") if k in r}
    return out
