"""The probe's objective and the numerics it needs (stable log1pexp, logistic, x log x).

Objective (identical to scikit-learn's ``LogisticRegression(penalty="l1", solver="liblinear")``,
the official code's probe)::

    min_{w, b}  ||w||_1 + |b| + C * sum_i log(1 + exp(-y_i (w . x_i + b))),   y_i in {-1, +1}

The intercept **is** L1-penalised, as liblinear does (it appends a constant-1 column with
``intercept_scaling=1`` and penalises its weight like any other). We keep that on purpose: the
paper's neuron sets were produced that way, and an unpenalised intercept changes which neurons
survive at small C.
"""

from __future__ import annotations

import numpy as np

from hneurons.core.rows import gather


def log1pexp(t: np.ndarray) -> np.ndarray:
    """Stable log(1 + exp(t))."""
    return np.logaddexp(0.0, t)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Stable logistic function."""
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def xlogx(a: np.ndarray) -> np.ndarray:
    return np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0)), 0.0)


def l1_logistic_objective(
    X: np.ndarray, y: np.ndarray, C: float, coef: np.ndarray, intercept: float, sample_weight: np.ndarray | None = None
) -> float:
    """liblinear's L1 objective ``||w||_1 + |b| + C sum_i s_i log(1 + exp(-y_i z_i))`` (y in {0,1})."""
    nz = np.flatnonzero(coef)
    z = np.full(X.shape[0], float(intercept))
    if nz.size:
        z += gather(X, nz) @ np.asarray(coef, dtype=np.float64)[nz]
    ys = np.where(np.asarray(y) > 0, 1.0, -1.0)
    loss = log1pexp(-ys * z)
    if sample_weight is not None:
        loss = loss * sample_weight
    return float(np.abs(coef).sum() + abs(intercept) + C * loss.sum())

