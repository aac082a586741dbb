"""The methods compared with the H-Neuron probe, each fitted on the training answers.

The paper (arXiv 2512.01797) Table 1 compares a classifier on the H-Neurons with one on as many
random neurons; :data:`BASELINES` adds the sparse probe as-is, the best single layer, the residual
stream, and the training-free scores (log-probability, entropy, length, span shape). Every entry
fits on :class:`TrainData` and returns a :class:`Scorer` that scores :class:`EvalData`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hneurons.detection.token_stats import TokenStats
from hneurons.errors import DataError
from hneurons.probe.estimator import HNeuronProbe, build_rows
from hneurons.registry import Registry
from hneurons.stats import random_neuron_draws


@dataclass
class TrainData:
    """What the methods may fit on: training CETT features and labels, the fitted L1 probe, and
    the token statistics of the training questions' answers (for residual/logprob/entropy/length)."""

    answer: np.ndarray  # [n_questions, n_neurons]
    other: np.ndarray | None
    labels: np.ndarray
    probe: HNeuronProbe
    mode: str
    d_ff: int
    n_layers: int
    stats: TokenStats | None = None
    random_draws: int = 20
    seed: int = 0


@dataclass
class EvalData:
    """What a method scores: answer-region CETT features and token statistics of the items."""

    answer: np.ndarray
    stats: TokenStats | None = None


@dataclass
class Scorer:
    """A fitted method. ``score`` gives one hallucination score per item (higher = more likely
    hallucinated; ``[n, draws]`` for the random baseline). Accuracy predicts hallucination when
    ``score > threshold``: 0.5 for fitted probes (their probability), a threshold fitted on the
    training answers for the one-dimensional scores."""

    score: Callable[[EvalData], np.ndarray]
    threshold: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Baseline:
    name: str
    description: str
    fit: Callable[[TrainData], Scorer]


REFIT_C = 1.0


def _standardised_lr(X: np.ndarray, y: np.ndarray) -> Any:
    """Standardised L2 logistic regression (C = REFIT_C) fitted on ``X``: every refit baseline's model."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=REFIT_C, max_iter=2000)).fit(
        np.asarray(X, dtype=np.float64), y)


def refit_columns(train: TrainData, cols: np.ndarray) -> Any:
    """Logistic regression refit on ``cols`` only, same rows as the probe (3-vs-1 by default).

    Choice (the paper, arXiv 2512.01797 §4.5, leaves it open): the k columns are standardised on the training rows and
    fitted with an L2 penalty at C = 1 (lbfgs). Standardising makes one mild penalty fit neurons whose
    CETT scales differ by orders of magnitude; the L2 term keeps the fit finite when the classes are
    separable. The H-Neuron and random refits use exactly this recipe, so they differ only in columns.
    """
    other = train.other[:, cols] if train.other is not None else None
    X, y, _ = build_rows(train.answer[:, cols], other, train.labels, train.mode)
    return _standardised_lr(X, y)


def h_indices(probe: HNeuronProbe) -> np.ndarray:
    """Flat indices of the H-Neurons (positive probe weight, the paper §3 and §6.1.3)."""
    return np.flatnonzero(np.asarray(probe.coef_) > 0)


def _proba(model: Any, X: np.ndarray) -> np.ndarray:
    return model.predict_proba(np.asarray(X, dtype=np.float64))[:, 1]


def _fit_h_neurons(train: TrainData) -> Scorer:
    cols = h_indices(train.probe)
    if cols.size == 0:
        raise DataError("the probe has no positive weights (no H-Neurons); choose a larger C in the probe stage")
    m = refit_columns(train, cols)
    return Scorer(lambda ev: _proba(m, ev.answer[:, cols]), 0.5, {"k": int(cols.size), "C": REFIT_C})


def _fit_full_l1(train: TrainData) -> Scorer:
    probe = train.probe
    return Scorer(lambda ev: probe.predict_proba(ev.answer)[:, 1], 0.5,
                  {"n_nonzero": probe.n_nonzero_, "n_positive": probe.n_positive_, "C": float(probe.C)})


def _fit_random(train: TrainData) -> Scorer:
    h = h_indices(train.probe)
    if h.size == 0:
        raise DataError("the probe has no H-Neurons, so there is no k for the random baseline")
    draws = random_neuron_draws(train.answer.shape[1], int(h.size), h, max(1, train.random_draws), train.seed)
    models = [refit_columns(train, cols) for cols in draws]

    def score(ev: EvalData) -> np.ndarray:
        return np.column_stack([_proba(m, ev.answer[:, cols]) for m, cols in zip(models, draws)])

    return Scorer(score, 0.5, {"k": int(h.size), "draws": int(draws.shape[0]), "seed": train.seed})


def _fit_best_layer(train: TrainData) -> Scorer:
    """L1 probe (same C and rows as the main probe) on each layer alone; keep the layer with the best
    1-vs-1 accuracy on a held-out fifth of the training questions, then refit it on all of them."""
    y = train.labels
    rng = np.random.default_rng(train.seed)
    val = np.zeros(y.size, dtype=bool)
    for c in (0, 1):
        idx = np.flatnonzero(y == c)
        val[rng.choice(idx, max(1, idx.size // 5), replace=False)] = True
    fit_idx, val_idx = np.flatnonzero(~val), np.flatnonzero(val)
    C = float(train.probe.C)
    accs = []
    for layer in range(train.n_layers):
        cols = slice(layer * train.d_ff, (layer + 1) * train.d_ff)
        other = train.other[fit_idx, cols] if train.other is not None else None
        X, yy, _ = build_rows(train.answer[fit_idx, cols], other, y[fit_idx], train.mode)
        p = HNeuronProbe(C=C, mode=train.mode).fit(X, yy)
        accs.append(float(((p.decision_function(train.answer[val_idx, cols]) > 0) == y[val_idx]).mean()))
    best = int(np.argmax(accs))
    cols = slice(best * train.d_ff, (best + 1) * train.d_ff)
    other = train.other[:, cols] if train.other is not None else None
    X, yy, _ = build_rows(train.answer[:, cols], other, y, train.mode)
    probe = HNeuronProbe(C=C, mode=train.mode).fit(X, yy)
    return Scorer(lambda ev: probe.predict_proba(ev.answer[:, cols])[:, 1], 0.5,
                  {"layer": best, "val_accuracy": accs, "n_nonzero": probe.n_nonzero_, "C": C})


def _need_stats(train: TrainData) -> TokenStats:
    if train.stats is None:
        raise DataError("token statistics of the training answers are missing")
    return train.stats


def _fit_residual(train: TrainData) -> Scorer:
    """Standardised L2 logistic regression (C = 1) on the answer-averaged residual stream, answer rows only."""
    st = _need_stats(train)
    m = _standardised_lr(st.residual, train.labels)
    return Scorer(lambda ev: _proba(m, ev.stats.residual), 0.5, {"layer": st.residual_layer, "C": REFIT_C})


def _fit_span_shape(train: TrainData) -> Scorer:
    """Leak guard: standardised logistic regression (C = 1) on the span's shape alone (answer rows)."""
    st = _need_stats(train)
    m = _standardised_lr(st.span_shape, train.labels)
    return Scorer(lambda ev: _proba(m, ev.stats.span_shape), 0.5, {"features": ["span_tokens", "span_fraction", "span_start"]})


TRIVIAL_BASELINES = ("length", "span_shape")
"""Scores that know nothing about the model's internals: detection only holds if it beats them."""


def fit_threshold(score: np.ndarray, labels: np.ndarray) -> float:
    """Where a 1-D logistic regression on the training answers crosses p = 0.5 (``score > t`` → 1).

    Gives the training-free scores an accuracy comparable with the probes' 0.5 rule without looking
    at evaluation labels; a fit with a negative slope (score points the wrong way on training) makes
    every item above ``t`` count as faithful, which shows up honestly as accuracy below 50 %.
    """
    from sklearn.linear_model import LogisticRegression

    s = np.asarray(score, dtype=np.float64)
    mu, sd = s.mean(), s.std() or 1.0
    m = LogisticRegression(C=1e6, max_iter=1000).fit(((s - mu) / sd)[:, None], labels)
    w, b = float(m.coef_[0, 0]), float(m.intercept_[0])
    if w <= 0:
        return float("inf")
    return float(mu + sd * (-b / w))


def _one_dim(name: str, get: Callable[[TokenStats], np.ndarray]) -> Callable[[TrainData], Scorer]:
    def fit(train: TrainData) -> Scorer:
        st = _need_stats(train)
        thr = fit_threshold(get(st), train.labels)
        return Scorer(lambda ev: get(ev.stats), thr, {"threshold": thr, "training_free": name != "length"})

    return fit


BASELINES: Registry[Baseline] = Registry("detection method")
for _b in (
    Baseline("h_neurons", "logistic regression refit on the k H-Neuron columns (paper Table 1 'H-Neurons')", _fit_h_neurons),
    Baseline("h_neurons_full_l1", "the sparse L1 probe as-is, all non-zero weights (official evaluation)", _fit_full_l1),
    Baseline("random", "the same refit on k random non-H neurons, mean over draws (paper Table 1 'Random')", _fit_random),
    Baseline("best_layer", "L1 probe on all neurons of the single best layer (held-out accuracy on training)", _fit_best_layer),
    Baseline("residual", "logistic regression on the residual stream averaged over answer tokens (middle layer)", _fit_residual),
    Baseline("logprob", "negative mean answer-token log-probability (training-free)", _one_dim("logprob", lambda s: -s.logprob)),
    Baseline("entropy", "mean predictive entropy over answer tokens (training-free)", _one_dim("entropy", lambda s: s.entropy)),
    Baseline("length", "response length in tokens alone (confound check; longer = hallucinated)", _one_dim("length", lambda s: s.length)),
    Baseline("span_shape", "logistic regression on the answer span's token count, share of the response and start "
             "offset (leak guard: high = the span rule separates the classes)", _fit_span_shape),
):
    BASELINES.register(_b.name, _b)
