"""The C path: the grid, warm-started fits over it, and the paper's C rule (arXiv 2512.01797, §6.1.3)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hneurons.errors import ConfigError, DataError
from hneurons.probe.design import Design, as_labels, as_matrix, check_finite_matrix, feature_stats
from hneurons.probe.estimator import HNeuronProbe
from hneurons.probe.torch_design import make_design


def default_C_grid(X: np.ndarray, y: np.ndarray, n: int = 10, span: float = 1e3) -> np.ndarray:
    """Log-spaced C from ``C_min`` to ``C_min * span``.

    ``C_min = 1 / max_j |X_j^T (y - ybar)|`` is where the first feature would enter if the
    intercept were free (glmnet's lambda_max); raw CETT values are ~1e-2, so this lands at C ~ 0.1–1
    and the useful range reaches 10^2–10^3, far outside the paper's illustrative 0.01–10.
    """
    X = as_matrix(X)
    y01, _ = as_labels(y, X.shape[0])
    g = Design(X).rmatvec(y01 - y01.mean())
    c_min = 1.0 / float(np.abs(g).max())
    return c_min * np.logspace(0.0, np.log10(span), n)


@dataclass
class PathPoint:
    """One fitted point of the C path."""

    C: float
    coef: np.ndarray
    intercept: float
    n_nonzero: int
    n_positive: int
    train_acc: float
    objective: float
    seconds: float

    def to_json(self) -> dict:
        """JSON-safe summary (weights as sparse index/value lists)."""
        nz = np.flatnonzero(self.coef)
        return {"C": self.C, "intercept": self.intercept, "n_nonzero": self.n_nonzero, "n_positive": self.n_positive,
                "train_acc": self.train_acc, "objective": self.objective, "seconds": self.seconds,
                "indices": nz.tolist(), "weights": self.coef[nz].tolist()}


def fit_path(X: Any, y: Any, Cs: Sequence[float], sample_weight: Any = None, **probe_kwargs: Any) -> list[PathPoint]:
    """Fit the probe for every C (ascending), warm-starting each from the previous solution."""
    if len(Cs) == 0:
        raise ConfigError("fit_path needs at least one C value")
    X = as_matrix(X)
    Cs = sorted(float(c) for c in Cs)
    template = HNeuronProbe(**probe_kwargs)
    template._check_params()
    check_finite_matrix(X)  # once for the path, not once per C (a full pass over millions of columns)
    mean, scale = feature_stats(X) if template.standardize else (None, None)
    design = make_design(X, template.backend, mean, scale)
    points: list[PathPoint] = []
    warm = None
    state = None
    for C in Cs:
        t0 = time.perf_counter()
        probe = HNeuronProbe(C=C, **probe_kwargs)
        probe.fit(X, y, sample_weight, warm_start=warm, _path_state=state, _design=design)
        secs = time.perf_counter() - t0
        train_acc = float((probe.predict(X) == np.asarray(y)).mean())
        points.append(PathPoint(C, probe.coef_.copy(), probe.intercept_, probe.n_nonzero_, probe.n_positive_,
                                train_acc, probe.objective_, secs))
        if probe.solver != "liblinear":
            warm = (probe.coef_, probe.intercept_)
            state = (probe._grad, C) if probe._grad is not None else None
    return points


def select_C(path_points: Sequence[PathPoint], heldout_acc: dict[float, float],
             suppression_acc: dict[float, float] | None = None) -> float:
    """Paper rule (the paper, arXiv 2512.01797, §6.1.3): the C maximising held-out accuracy + suppressed-model accuracy.

    ``suppression_acc`` is optional until the intervention stage exists. Ties go to the smaller C
    (sparser probe). Every path C must have a score; a missing one is an error, not a silent skip.
    """
    if not path_points:
        raise ConfigError("select_C needs at least one path point")

    def lookup(table: dict[float, float], C: float, name: str) -> float:
        for k, v in table.items():
            if np.isclose(float(k), C, rtol=1e-9, atol=0.0):
                return float(v)
        raise DataError(f"{name} has no entry for C={C:g}; score every C of the path")

    best_c, best = None, -np.inf
    for pt in sorted(path_points, key=lambda q: q.C):
        total = lookup(heldout_acc, pt.C, "heldout_acc")
        if suppression_acc is not None:
            total += lookup(suppression_acc, pt.C, "suppression_acc")
        if total > best:
            best_c, best = pt.C, total
    return float(best_c)
