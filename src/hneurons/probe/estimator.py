"""The sparse H-neuron probe: L1-penalised logistic regression on CETT features (PAPER.md §4).

Objective (identical to scikit-learn's ``LogisticRegression(penalty="l1", solver="liblinear")``,
the official code's probe)::

    min_{w, b}  ||w||_1 + |b| + C * sum_i log(1 + exp(-y_i (w . x_i + b))),   y_i in {-1, +1}

The intercept **is** L1-penalised, as liblinear does (it appends a constant-1 column with
``intercept_scaling=1`` and penalises its weight like any other). We keep that on purpose: the
paper's neuron sets were produced that way, and an unpenalised intercept changes which neurons
survive at small C.

Solver ("newton_cd", what ``solver="auto"`` picks): a working-set proximal Newton method in the
spirit of glmnet / newGLMNET / celer, written so that the full feature matrix is only ever *read*:

* Outer loop: one pass ``X^T v`` over all features (float32 BLAS, or row chunks for float16 /
  memmaps) gives the gradient, a duality gap and the KKT violators.
* Working set = current support + intercept + the worst violators (up to twice the support), plus a
  capped sequential strong-rule set on warm starts, so subproblems have hundreds of columns, not 46k.
* Inner loop: Newton steps on the working set. The L1 quadratic model is solved by coordinate
  descent *after* minimising the intercept out in closed form (raw CETT columns are ~0.9-correlated
  with the constant column, which makes plain CD crawl), with an exact Newton solve on the current
  orthant every two passes; Armijo line search on the true objective.
* Stopping: relative duality gap ``(P - D) / P <= tol / 10``, with the dual point the rescaled
  gradient ``C (p - y)`` — an exact certificate, not a heuristic. ``tol`` keeps scikit-learn's
  default 1e-4; dividing by 10 makes our optimum at least as tight as liblinear's (measured:
  liblinear at tol=1e-4 stops 1e-3..1e-2 above the optimum at C >= 10 on CETT-like data, while this
  solver matches liblinear run at tol=1e-8 to ~1e-10).
* Cold fits walk an internal path ``C_min * 4^k`` up to C, which keeps working sets small.

:func:`fit_path` warm-starts over increasing C, so each point only adds the few neurons that
enter; :func:`default_C_grid` spans C from where the first neuron enters (glmnet's lambda_max
analogue, ``C_min = 1 / max_j |X_j^T (y - ybar)|``) upwards.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import ThreadpoolController

from hneurons.errors import ConfigError, DataError, NotFittedError
from hneurons.rundir.files import default_file_mode

__all__ = [
    "HNeuronProbe",
    "PathPoint",
    "build_rows",
    "default_C_grid",
    "fit_path",
    "l1_logistic_objective",
    "liblinear_l1",
    "select_C",
    "selection_stability",
]

MODES = ("3-vs-1", "1-vs-1")
SOLVERS = ("auto", "newton_cd", "liblinear")
_FORMAT = "hneurons.probe.estimator/1"
_CHUNK_BYTES = 64 << 20  # row chunks for float16 / memmap passes: bounded extra memory
_MIN_ROWS = 4
_MIN_PER_CLASS = 2
_EXACT_TOP = 64  # gradient entries recomputed in float64 for the duality-gap certificate
_MAX_STALL = 5  # outer iterations without 1 % gap progress before giving up (float rounding floor)
_BLAS: ThreadpoolController | None = None


def _single_thread_blas() -> Any:
    """Context limiting BLAS to one thread (controller built once: inspecting libraries is slow)."""
    global _BLAS
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


# --------------------------------------------------------------------------- numerics helpers


def _log1pexp(t: np.ndarray) -> np.ndarray:
    """Stable log(1 + exp(t))."""
    return np.logaddexp(0.0, t)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Stable logistic function."""
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _xlogx(a: np.ndarray) -> np.ndarray:
    return np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0)), 0.0)


def _row_chunk(X: np.ndarray) -> int:
    return max(1, int(_CHUNK_BYTES // max(1, X.shape[1] * 4)))


def _direct_blas(X: np.ndarray) -> bool:
    """True when ``X`` can go straight to float32 BLAS without any copy."""
    return X.dtype == np.float32 and (X.flags.c_contiguous or X.flags.f_contiguous)


class _Design:
    """Read-only access to the feature matrix with optional implicit standardisation.

    Standardisation is applied algebraically (``(X - mu) / sigma`` is never materialised), which is
    what lets a 2M-column memmap be fitted without a float64 copy.
    """

    def __init__(self, X: np.ndarray, mean: np.ndarray | None = None, scale: np.ndarray | None = None):
        self.X = X
        self.n, self.p = X.shape
        self.mean = mean
        self.scale = scale

    def rmatvec(self, v: np.ndarray) -> np.ndarray:
        """``X_std^T v`` for all features, float64 result."""
        X = self.X
        if _direct_blas(X):
            g = (X.T @ v.astype(np.float32)).astype(np.float64)
        else:
            g = np.zeros(self.p)
            step = _row_chunk(X)
            v32 = v.astype(np.float32)
            for s in range(0, self.n, step):
                g += X[s : s + step].astype(np.float32, copy=False).T @ v32[s : s + step]
        if self.mean is not None:
            g = (g - self.mean * v.sum()) / self.scale
        return g

    def cols(self, idx: np.ndarray) -> np.ndarray:
        """Dense float64 ``[n, k]`` block of (standardised) columns ``idx``."""
        block = np.asarray(self.X[:, idx], dtype=np.float64)
        if self.mean is not None:
            block = (block - self.mean[idx]) / self.scale[idx]
        return block


def l1_logistic_objective(
    X: np.ndarray, y: np.ndarray, C: float, coef: np.ndarray, intercept: float, sample_weight: np.ndarray | None = None
) -> float:
    """liblinear's L1 objective ``||w||_1 + |b| + C sum_i s_i log(1 + exp(-y_i z_i))`` (y in {0,1})."""
    nz = np.flatnonzero(coef)
    z = np.full(X.shape[0], float(intercept))
    if nz.size:
        z += np.asarray(X[:, nz], dtype=np.float64) @ np.asarray(coef, dtype=np.float64)[nz]
    ys = np.where(np.asarray(y) > 0, 1.0, -1.0)
    loss = _log1pexp(-ys * z)
    if sample_weight is not None:
        loss = loss * sample_weight
    return float(np.abs(coef).sum() + abs(intercept) + C * loss.sum())


@dataclass
class _Result:
    coef: np.ndarray
    intercept: float
    objective: float
    gap: float
    n_outer: int
    converged: bool
    grad: np.ndarray  # X^T (p - y) at the solution (unscaled by C); feeds the next path point


def _solve(
    design: _Design,
    y01: np.ndarray,
    C: float,
    coef0: np.ndarray | None,
    b0: float,
    tol: float,
    max_iter: int,
    sw: np.ndarray | None,
    grad_prev: np.ndarray | None = None,
    C_prev: float | None = None,
) -> _Result:
    """Working-set proximal Newton for the liblinear L1-logistic objective (see module docstring)."""
    n, p = design.n, design.p
    w = np.zeros(p) if coef0 is None else np.asarray(coef0, dtype=np.float64).copy()
    b = float(b0)
    ys = np.where(y01 > 0, 1.0, -1.0)
    s = np.ones(n) if sw is None else sw
    gap_tol = tol / 10.0

    supp = np.flatnonzero(w)
    z = np.full(n, b)
    if supp.size:
        z += design.cols(supp) @ w[supp]

    def primal(zz: np.ndarray, l1: float) -> float:
        return l1 + C * float((s * _log1pexp(-ys * zz)).sum())

    # Strong-rule seed for warm starts: |grad_j(C_prev)| >= 2/C - 1/C_prev (Tibshirani et al. 2012),
    # capped to the strongest few: for C steps of 2x or more the rule keeps almost everything.
    strong = np.empty(0, dtype=np.int64)
    if grad_prev is not None and C_prev is not None and 2.0 / C - 1.0 / C_prev > 0:
        cand = np.flatnonzero(np.abs(grad_prev) >= 2.0 / C - 1.0 / C_prev)
        cap = max(100, supp.size)
        if cand.size > cap:
            cand = cand[np.argpartition(-np.abs(grad_prev[cand]), cap - 1)[:cap]]
        strong = cand

    converged = False
    gap = best_gap = np.inf
    stalled = 0
    P = np.inf
    g_full = np.zeros(p)
    it = 0
    for it in range(1, max_iter + 1):
        prob = _sigmoid(z)
        resid = s * (prob - y01)  # d loss / d z, before C
        g_full = design.rmatvec(resid)
        gb = float(resid.sum())
        P = primal(z, float(np.abs(w).sum() + abs(b)))
        # Dual point theta = C * resid, rescaled into the feasible set ||X~^T theta||_inf <= 1. The
        # norm is recomputed in float64 on the largest entries: float32 rounding of 1e-5 there would
        # cost more duality gap than the tolerance allows at C ~ 10^2.
        top = np.argpartition(-np.abs(g_full), min(_EXACT_TOP, p) - 1)[:_EXACT_TOP]
        dual_norm = C * max(float(np.abs(design.cols(top).T @ resid).max()), abs(gb))
        scale = 1.0 if dual_norm <= 1.0 else 1.0 / dual_norm
        a = np.where(y01 > 0, scale * (1.0 - prob), scale * prob)
        D = -C * float((s * (_xlogx(a) + _xlogx(1.0 - a))).sum())
        gap = P - D
        if gap <= gap_tol * abs(P):
            converged = True
            break
        if gap < 0.99 * best_gap:
            best_gap, stalled = gap, 0
        else:
            stalled += 1
            if stalled >= _MAX_STALL:
                break

        # Working set: support + worst KKT violators (|C g_j| > 1 at w_j = 0) + strong set.
        supp = np.flatnonzero(w)
        score = C * np.abs(g_full)
        score[supp] = -np.inf
        viol = np.flatnonzero(score > 1.0)
        n_add = max(100, 2 * supp.size)
        if viol.size > n_add:
            viol = viol[np.argpartition(-score[viol], n_add - 1)[:n_add]]
        ws = np.union1d(np.union1d(supp, viol), strong)
        strong = np.empty(0, dtype=np.int64)
        # Ask the subproblem for less than the current gap; once no feature is missing, for the target.
        inner_tol = gap_tol * abs(P) * 0.5 if viol.size == 0 else max(0.3 * gap, gap_tol * abs(P) * 0.5)
        w_ws, b, z = _solve_ws(design.cols(ws), w[ws], b, z, y01, ys, s, C, inner_tol)
        w[ws] = w_ws
    if not converged:
        warnings.warn(
            f"L1 probe at C={C:g} stopped after {it} outer iterations with relative duality gap "
            f"{gap / abs(P):.2e} > {gap_tol:.1e}; raise max_iter or tol",
            ConvergenceWarning,
            stacklevel=3,
        )
    grad = g_full
    return _Result(w, b, P, float(gap), it, converged, grad)


def _qp_value(Hss: np.ndarray, r: np.ndarray, u: np.ndarray, S: np.ndarray, v: np.ndarray) -> float:
    """Change of the QP model when ``u[S]`` becomes ``v`` (r = model gradient at u, Hss = H[S, S])."""
    dv = v - u[S]
    return float(r[S] @ dv + 0.5 * dv @ (Hss @ dv) + np.abs(v).sum() - np.abs(u[S]).sum())


def _kkt_violation(u: np.ndarray, r: np.ndarray) -> float:
    """Largest distance of ``-r`` from the subdifferential of ``||u||_1``."""
    viol = np.where(u != 0, np.abs(r + np.sign(u)), np.maximum(np.abs(r) - 1.0, 0.0))
    return float(viol.max(initial=0.0))


_QP_PASSES = 2
_QP_FORCING = 0.1  # inexact Newton: solve each model to 10% of its initial KKT violation


def _lasso_qp(H: np.ndarray, g: np.ndarray, beta: np.ndarray, eps: float = 1e-7, max_rounds: int = 100) -> np.ndarray:
    """Minimise ``g.(u - beta) + (u - beta)^T H (u - beta) / 2 + ||u||_1`` over u; returns u - beta.

    Why not plain coordinate descent: correlated columns (CETT features share per-token factors)
    make CD crawl. Each round therefore does two CD passes (to find the sign pattern) and then an
    exact Newton solve of the quadratic restricted to
    the current orthant, walking towards it only up to the first sign change; both moves decrease
    the (convex) model, so the loop is monotone and ends when the KKT conditions hold to ``eps``.
    """
    u = beta.astype(np.float64).copy()
    r = g.astype(np.float64).copy()  # gradient of the smooth part of the model at u
    diag = np.maximum(np.diag(H).copy(), 1e-300)
    stop = max(eps, _QP_FORCING * _kkt_violation(u, r))
    for _ in range(max_rounds):
        # Shrinking: coordinates at zero well inside the KKT box cannot move in a CD pass.
        live = np.flatnonzero((u != 0) | (np.abs(r) > 0.9)).tolist()
        for _pass in range(_QP_PASSES):
            for j in live:
                a = diag[j]
                uj = u[j]
                t = uj - r[j] / a
                lam = 1.0 / a
                un = t - lam if t > lam else (t + lam if t < -lam else 0.0)
                if un != uj:
                    u[j] = un
                    r += (un - uj) * H[j]  # H is symmetric: a row is contiguous
        S = np.flatnonzero(u)
        if S.size:
            sig = np.sign(u[S])
            Hss = H[np.ix_(S, S)]
            try:
                step = np.linalg.solve(Hss, -(r[S] + sig))
            except np.linalg.LinAlgError:
                step = np.zeros(S.size)
            full = u[S] + step
            cross = np.flatnonzero(np.sign(full) != sig)
            if cross.size:
                # Either stop at the first sign change, or take the whole step and clip the
                # crossers to zero (OWL-QN style); keep whichever lowers the model more.
                ratios = u[S][cross] / -step[cross]
                first = u[S] + float(ratios.min()) * step
                first[cross[np.argmin(ratios)]] = 0.0  # exactly on the boundary, not 1e-17 past it
                clipped = full.copy()
                clipped[cross] = 0.0
                cand = min((first, clipped), key=lambda v: _qp_value(Hss, r, u, S, v))
            else:
                cand = full
            move = cand - u[S]
            u[S] = cand
            r += move @ H[S]
            if cross.size:
                continue
        if _kkt_violation(u, r) <= stop:
            break
    return u - beta


def _newton_direction(H: np.ndarray, g: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Minimiser (minus beta) of the L1 quadratic model; the intercept is the last coordinate.

    While the intercept is non-zero and keeps its sign, its penalty is linear, so it is minimised out
    in closed form (Schur complement). That turns the feature Gram matrix into a weighted
    *covariance*, removing the ~0.9 correlation every raw CETT column has with the constant column,
    and coordinate descent on what remains converges in a few passes.
    """
    k = g.size - 1
    sb = np.sign(beta[k])
    if sb != 0 and H[k, k] > 0:
        h = H[:k, k]
        hbb = H[k, k]
        c = g[k] + sb
        Hf = H[:k, :k] - np.outer(h / hbb, h)
        Hf = (Hf + Hf.T) / 2.0
        df = _lasso_qp(Hf, g[:k] - h * (c / hbb), beta[:k])
        db = -(c + h @ df) / hbb
        if np.sign(beta[k] + db) == sb:
            return np.r_[df, db]
    return _lasso_qp(H, g, beta)


def _solve_cold(design: _Design, y01: np.ndarray, C: float, tol: float, max_iter: int, sw: np.ndarray | None) -> _Result:
    """Fit from scratch through a short internal path (C_min * 4^k, k = 1, 2, ...) up to C.

    Why: from w = 0 at a large C the first working sets overshoot (hundreds of neurons that later
    drop out) and their Newton subproblems dominate the run time; walking up the path keeps every
    working set close to its final support. Intermediate points are solved loosely (10 x tol).
    """
    s = np.ones(design.n) if sw is None else sw
    ybar = float((s * y01).sum() / s.sum())
    c_min = 1.0 / max(float(np.abs(design.rmatvec(s * (ybar - y01))).max()), 1e-300)
    w, b, grad, c_prev = None, 0.0, None, None
    c = 4.0 * c_min
    while c < C / 2.0:
        res = _solve(design, y01, c, w, b, 10.0 * tol, max_iter, sw, grad, c_prev)
        w, b, grad, c_prev = res.coef, res.intercept, res.grad, c
        c *= 4.0
    return _solve(design, y01, C, w, b, tol, max_iter, sw, grad, c_prev)


def _solve_ws(
    Xw: np.ndarray,
    w: np.ndarray,
    b: float,
    z: np.ndarray,
    y01: np.ndarray,
    ys: np.ndarray,
    s: np.ndarray,
    C: float,
    gap_target: float,
    max_newton: int = 100,
) -> tuple[np.ndarray, float, np.ndarray]:
    """Proximal Newton on the working-set columns (plus intercept) until its duality gap is small."""
    n, k = Xw.shape
    A = np.empty((n, k + 1))
    A[:, :k] = Xw
    A[:, k] = 1.0
    beta = np.r_[w, b]
    for _ in range(max_newton):
        prob = _sigmoid(z)
        resid = s * (prob - y01)
        g = C * (A.T @ resid)
        l1 = float(np.abs(beta).sum())
        f = C * float((s * _log1pexp(-ys * z)).sum())
        dual_norm = float(np.abs(g).max())
        scale = 1.0 if dual_norm <= 1.0 else 1.0 / dual_norm
        a = np.where(y01 > 0, scale * (1.0 - prob), scale * prob)
        D = -C * float((s * (_xlogx(a) + _xlogx(1.0 - a))).sum())
        if f + l1 - D <= gap_target:
            break
        H = A.T @ (A * (C * s * prob * (1.0 - prob))[:, None])
        H[np.diag_indices_from(H)] += 1e-12 * max(float(np.trace(H)) / (k + 1), 1e-300)
        with _single_thread_blas():  # k x k algebra in a Python loop: BLAS threads only contend
            d = _newton_direction(H, g, beta)
        if not np.any(d):
            break
        Ad = A @ d
        delta = float(g @ d) + float(np.abs(beta + d).sum()) - l1
        step = 1.0
        old = f + l1
        for _ls in range(40):
            zn = z + step * Ad
            new = C * float((s * _log1pexp(-ys * zn)).sum()) + float(np.abs(beta + step * d).sum())
            if new <= old + 1e-4 * step * delta:
                break
            step *= 0.5
        else:
            break
        beta = beta + step * d
        z = zn
    return beta[:k], float(beta[k]), z


def liblinear_l1(C: float, tol: float = 1e-4, max_iter: int = 1000, random_state: int = 42) -> Any:
    """The official probe, ``LogisticRegression(penalty="l1", solver="liblinear")``, for parity checks.

    scikit-learn 1.8 deprecated ``penalty`` in favour of ``l1_ratio=1``; pick whichever this version wants.
    """
    import sklearn
    from sklearn.linear_model import LogisticRegression

    major, minor = (int(v) for v in sklearn.__version__.split(".")[:2])
    pen = {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}
    return LogisticRegression(C=C, solver="liblinear", tol=tol, max_iter=max_iter, random_state=random_state, **pen)


# --------------------------------------------------------------------------- validation


def _check_finite(X: np.ndarray, what: str = "X") -> None:
    """Scan in row chunks (memmap-friendly) and name the first non-finite cell."""
    step = _row_chunk(X)
    for s in range(0, X.shape[0], step):
        block = np.asarray(X[s : s + step])
        bad = ~np.isfinite(block)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise DataError(
                f"{what} row {s + r}, column {c} is {block[r, c]}; the CETT features must be finite "
                "(re-extract features or drop that row)"
            )


def _as_matrix(X: Any, what: str = "X") -> np.ndarray:
    """Accept float16/32/64 arrays and memmaps as-is (no copy); other inputs become float32."""
    if isinstance(X, np.ndarray) and X.dtype in (np.float16, np.float32, np.float64):
        A = X
    else:
        try:
            A = np.asarray(X, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{what} must be a numeric matrix [n_rows, n_neurons]: {exc}") from None
    if A.ndim != 2:
        raise DataError(f"{what} must be 2-D [n_rows, n_neurons], got shape {A.shape}")
    if A.shape[1] == 0:
        raise DataError(f"{what} has no feature columns; pass at least one neuron")
    return A


def _as_labels(y: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"y must be one label per row, got shape {y.shape}")
    if y.shape[0] != n:
        raise DataError(f"X has {n} rows but y has {y.shape[0]} labels; they must be aligned")
    classes = np.unique(y)
    if classes.size != 2:
        raise DataError(
            f"y must contain exactly two classes (hallucinated=1, faithful=0), found {classes.size}: "
            f"{classes.tolist()[:5]}; check the labels of the training set"
        )
    return (y == classes[1]).astype(np.float64), classes


def _feature_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and std in float64, accumulated over row chunks."""
    n, p = X.shape
    s1 = np.zeros(p)
    s2 = np.zeros(p)
    step = _row_chunk(X)
    for s in range(0, n, step):
        blk = np.asarray(X[s : s + step], dtype=np.float64)
        s1 += blk.sum(axis=0)
        s2 += (blk * blk).sum(axis=0)
    mean = s1 / n
    var = np.maximum(s2 / n - mean * mean, 0.0)
    scale = np.sqrt(var)
    scale[scale == 0] = 1.0
    return mean, scale


# --------------------------------------------------------------------------- estimator


class HNeuronProbe(ClassifierMixin, BaseEstimator):
    """L1 logistic probe over flattened neuron features; positive weights are the H-neurons.

    ``d_ff`` maps flat feature ``f`` to ``(layer, neuron) = (f // d_ff, f % d_ff)`` in
    ``h_neurons_``; with ``d_ff=None`` every feature is reported as layer 0.
    ``mode`` records how the rows were built (:func:`build_rows`) and is saved with the probe.
    ``standardize=False`` is the paper-faithful setting (PAPER.md §4.2): raw CETT values.
    """

    def __init__(
        self,
        C: float = 1.0,
        mode: str = "3-vs-1",
        solver: str = "auto",
        standardize: bool = False,
        tol: float = 1e-4,
        max_iter: int = 1000,
        random_state: int = 42,
        d_ff: int | None = None,
    ):
        self.C = C
        self.mode = mode
        self.solver = solver
        self.standardize = standardize
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        self.d_ff = d_ff

    # ----------------------------------------------------------------- fitting

    def _check_params(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"probe mode={self.mode!r} is not one of {MODES}")
        if self.solver not in SOLVERS:
            raise ConfigError(f"probe solver={self.solver!r} is not one of {SOLVERS}")
        if not (isinstance(self.C, (int, float)) and np.isfinite(self.C) and self.C > 0):
            raise ConfigError(f"probe C={self.C!r} must be a positive finite number")
        if not self.tol > 0:
            raise ConfigError(f"probe tol={self.tol!r} must be > 0")
        if int(self.max_iter) < 1:
            raise ConfigError(f"probe max_iter={self.max_iter!r} must be >= 1")
        if self.d_ff is not None and int(self.d_ff) < 1:
            raise ConfigError(f"probe d_ff={self.d_ff!r} must be a positive integer or None")

    def fit(self, X: Any, y: Any, sample_weight: Any = None, *, warm_start: tuple[np.ndarray, float] | None = None,
            _path_state: tuple[np.ndarray, float] | None = None) -> "HNeuronProbe":
        """Fit on rows ``X`` (float16/32 arrays or memmaps are read, never copied to float64).

        ``sample_weight`` multiplies each row's loss (used for bootstrap resampling without copying
        rows). ``warm_start=(coef, intercept)`` starts the solver there (used by :func:`fit_path`).
        """
        self._check_params()
        X = _as_matrix(X)
        y01, classes = _as_labels(y, X.shape[0])
        n, p = X.shape
        n_pos = int(y01.sum())
        if n < _MIN_ROWS or min(n_pos, n - n_pos) < _MIN_PER_CLASS:
            raise DataError(
                f"training set too small: {n} rows ({n_pos} positive, {n - n_pos} negative); need >= {_MIN_ROWS} "
                f"rows and >= {_MIN_PER_CLASS} per class"
            )
        if self.d_ff is not None and p % int(self.d_ff):
            raise ConfigError(f"X has {p} features, not a multiple of d_ff={self.d_ff}; pass the model's intermediate size")
        sw = None
        if sample_weight is not None:
            sw = np.asarray(sample_weight, dtype=np.float64)
            if sw.shape != (n,) or not np.all(np.isfinite(sw)) or np.any(sw < 0):
                raise DataError(f"sample_weight must be {n} finite non-negative numbers, got shape {sw.shape}")
        _check_finite(X)

        mean = scale = None
        if self.standardize:
            mean, scale = _feature_stats(X)
        t0 = time.perf_counter()
        if self.solver == "liblinear":
            coef, b, n_iter = self._fit_liblinear(X, y01, sw, mean, scale)
            obj = l1_logistic_objective(X if mean is None else (np.asarray(X, dtype=np.float64) - mean) / scale,
                                        y01, self.C, coef, b, sw)
            gap, conv, grad = float("nan"), True, None
        else:
            w0, b0 = (None, 0.0) if warm_start is None else (np.asarray(warm_start[0], dtype=np.float64), float(warm_start[1]))
            gprev, cprev = (None, None) if _path_state is None else _path_state
            design = _Design(X, mean, scale)
            if w0 is None:
                res = _solve_cold(design, y01, float(self.C), float(self.tol), int(self.max_iter), sw)
            else:
                res = _solve(design, y01, float(self.C), w0, b0, float(self.tol), int(self.max_iter), sw, gprev, cprev)
            coef, b, n_iter, obj, gap, conv, grad = (res.coef, res.intercept, res.n_outer, res.objective, res.gap,
                                                     res.converged, res.grad)
        self.fit_seconds_ = time.perf_counter() - t0
        self.coef_ = coef
        self.intercept_ = float(b)
        self.classes_ = classes
        self.n_features_in_ = p
        self.n_iter_ = int(n_iter)
        self.objective_ = float(obj)
        self.duality_gap_ = float(gap)
        self.converged_ = bool(conv)
        self._grad = grad
        if mean is not None:
            self.scaler_mean_, self.scaler_scale_ = mean, scale
        return self

    def _fit_liblinear(self, X, y01, sw, mean, scale):
        """Reference path: scikit-learn's liblinear (copies X to float64 — use on small data)."""
        Xf = np.asarray(X, dtype=np.float64)
        if mean is not None:
            Xf = (Xf - mean) / scale
        m = liblinear_l1(float(self.C), tol=float(self.tol), max_iter=int(self.max_iter), random_state=self.random_state)
        m.fit(Xf, y01.astype(int), sample_weight=sw)
        return m.coef_[0].astype(np.float64), float(m.intercept_[0]), int(np.max(m.n_iter_))

    # ----------------------------------------------------------------- derived attributes

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError("this HNeuronProbe is not fitted yet; call fit(X, y) or HNeuronProbe.load(path) first")

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "coef_")

    @property
    def n_nonzero_(self) -> int:
        self._check_fitted()
        return int(np.count_nonzero(self.coef_))

    @property
    def n_positive_(self) -> int:
        self._check_fitted()
        return int((self.coef_ > 0).sum())

    @property
    def ratio_per_mille_(self) -> float:
        """Share of neurons with positive weight, in ‰ (paper Table 1 "Ratio")."""
        self._check_fitted()
        return self.n_positive_ / self.n_features_in_ * 1000.0

    @property
    def h_neurons_(self) -> list[tuple[int, int, float]]:
        """``(layer, neuron, weight)`` for every positive weight, largest weight first."""
        self._check_fitted()
        idx = np.flatnonzero(self.coef_ > 0)
        idx = idx[np.argsort(-self.coef_[idx], kind="stable")]
        d = int(self.d_ff) if self.d_ff else None
        return [((int(f) // d, int(f) % d) if d else (0, int(f))) + (float(self.coef_[f]),) for f in idx]

    # ----------------------------------------------------------------- prediction

    def decision_function(self, X: Any) -> np.ndarray:
        """Logit ``w . x + b`` per row; reads only the columns with non-zero weight."""
        self._check_fitted()
        X = _as_matrix(X)
        if X.shape[1] != self.n_features_in_:
            raise DataError(f"X has {X.shape[1]} features but the probe expects {self.n_features_in_}; "
                            "use features extracted from the same model")
        nz = np.flatnonzero(self.coef_)
        w = self.coef_[nz]
        out = np.full(X.shape[0], self.intercept_)
        if nz.size == 0:
            return out
        shift = 0.0
        if hasattr(self, "scaler_mean_"):
            w = w / self.scaler_scale_[nz]
            shift = float(self.scaler_mean_[nz] @ w)
        step = _row_chunk(X)
        for s in range(0, X.shape[0], step):
            blk = np.asarray(X[s : s + step][:, nz], dtype=np.float64)
            bad = ~np.isfinite(blk)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise DataError(f"X row {s + r}, column {nz[c]} is {blk[r, c]}; features must be finite")
            out[s : s + step] += blk @ w - shift
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """``[P(class 0), P(class 1)]`` per row; class 1 = hallucinated."""
        p1 = _sigmoid(self.decision_function(X))
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X: Any) -> np.ndarray:
        """Class label per row, positive when p > 0.5 (the paper's threshold)."""
        logit = self.decision_function(X)
        return self.classes_[(logit > 0).astype(int)]

    # ----------------------------------------------------------------- persistence

    def save(self, path: str | os.PathLike) -> Path:
        """Write safetensors (coef, intercept, scaler) with JSON metadata in the header; atomic."""
        from safetensors.numpy import save_file

        self._check_fitted()
        tensors = {"coef": np.ascontiguousarray(self.coef_, dtype=np.float64),
                   "intercept": np.array([self.intercept_], dtype=np.float64)}
        if hasattr(self, "scaler_mean_"):
            tensors["scaler_mean"] = np.ascontiguousarray(self.scaler_mean_, dtype=np.float64)
            tensors["scaler_scale"] = np.ascontiguousarray(self.scaler_scale_, dtype=np.float64)
        classes = self.classes_.tolist()
        meta = {
            "format": _FORMAT,
            "params": self.get_params(),
            "classes": classes,
            "n_features_in": int(self.n_features_in_),
            "n_iter": int(getattr(self, "n_iter_", 0)),
            "objective": float(getattr(self, "objective_", float("nan"))),
            "n_positive": self.n_positive_,
            "n_nonzero": self.n_nonzero_,
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"hneurons": json.dumps(meta)})
            os.chmod(tmp, default_file_mode())  # not mkstemp's 0600: colleagues read a run's files
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HNeuronProbe":
        """Read a probe written by :meth:`save`."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise DataError(f"probe file {path} does not exist; run the probe stage first")
        try:
            with safe_open(str(path), framework="numpy") as fh:
                header = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise DataError(f"probe file {path} is not a readable safetensors file: {exc}") from None
        try:
            meta = json.loads(header["hneurons"])
            if meta.get("format") != _FORMAT:
                raise DataError(f"probe file {path} has format {meta.get('format')!r}, expected {_FORMAT!r}")
            probe = cls(**meta["params"])
            probe.coef_ = tensors["coef"].astype(np.float64)
            probe.intercept_ = float(tensors["intercept"][0])
            probe.classes_ = np.asarray(meta["classes"])
            probe.n_features_in_ = int(meta["n_features_in"])
            probe.n_iter_ = int(meta.get("n_iter", 0))
            probe.objective_ = float(meta.get("objective", float("nan")))
        except (KeyError, json.JSONDecodeError, TypeError) as exc:
            raise DataError(f"probe file {path} lacks hneurons metadata ({exc}); it was not written by HNeuronProbe.save") from None
        if "scaler_mean" in tensors:
            probe.scaler_mean_ = tensors["scaler_mean"]
            probe.scaler_scale_ = tensors["scaler_scale"]
        return probe


# --------------------------------------------------------------------------- rows, path, selection


def build_rows(answer: np.ndarray, other: np.ndarray, labels: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows, labels and question groups for the probe (PAPER.md §4.1).

    ``answer``/``other``: ``[n_questions, n_neurons]``; ``labels``: 1 = hallucinated, 0 = faithful.
    3-vs-1 stacks answer rows (label = question label) then other rows (label 0); 1-vs-1 uses answer
    rows only. Other rows that are all-NaN (empty "other" region) are dropped; the count is in
    ``build_rows.last_dropped``. ``groups`` is the question index of each row, for grouped resampling.
    """
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r} is not one of {MODES}")
    answer = _as_matrix(answer, "answer")
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != answer.shape[0]:
        raise DataError(f"labels must have one entry per question ({answer.shape[0]}), got shape {lab.shape}")
    if not np.isin(lab, (0, 1)).all():
        raise DataError("labels must be 0 (faithful) or 1 (hallucinated)")
    lab = lab.astype(np.int64)
    q = np.arange(answer.shape[0])
    build_rows.last_dropped = 0
    if mode == "1-vs-1":
        return answer, lab, q
    other = _as_matrix(other, "other")
    if other.shape != answer.shape:
        raise DataError(f"other has shape {other.shape} but answer has {answer.shape}; they must be aligned per question")
    empty = np.isnan(other).all(axis=1)
    keep = np.flatnonzero(~empty)
    build_rows.last_dropped = int(empty.sum())
    X = np.concatenate([answer, other[keep]], axis=0)
    y = np.concatenate([lab, np.zeros(keep.size, dtype=np.int64)])
    groups = np.concatenate([q, q[keep]])
    return X, y, groups


build_rows.last_dropped = 0


def default_C_grid(X: np.ndarray, y: np.ndarray, n: int = 10, span: float = 1e3) -> np.ndarray:
    """Log-spaced C from ``C_min`` to ``C_min * span``.

    ``C_min = 1 / max_j |X_j^T (y - ybar)|`` is where the first feature would enter if the
    intercept were free (glmnet's lambda_max); raw CETT values are ~1e-2, so this lands at C ~ 0.1–1
    and the useful range reaches 10^2–10^3, far outside the paper's illustrative 0.01–10.
    """
    X = _as_matrix(X)
    y01, _ = _as_labels(y, X.shape[0])
    g = _Design(X).rmatvec(y01 - y01.mean())
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
    X = _as_matrix(X)
    Cs = sorted(float(c) for c in Cs)
    points: list[PathPoint] = []
    warm = None
    state = None
    for C in Cs:
        t0 = time.perf_counter()
        probe = HNeuronProbe(C=C, **probe_kwargs)
        probe.fit(X, y, sample_weight, warm_start=warm, _path_state=state)
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
    """Paper rule (PAPER.md §4.4): the C maximising held-out accuracy + suppressed-model accuracy.

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


def selection_stability(X: Any, y: Any, C: float, n_resamples: int = 10, seed: int = 0,
                        groups: Any = None, **kw: Any) -> dict:
    """Bootstrap refits at fixed C: how reproducible is the H-neuron set?

    Resampling is done with integer sample weights (bootstrap multiplicities), so rows are never
    copied; with ``groups`` whole questions are resampled (their answer and other rows together),
    otherwise rows are resampled within each class. Returns the mean/sd pairwise Jaccard of the
    positive sets, the per-neuron selection frequency of every ever-selected neuron, and the
    frequency of each neuron of the full-data fit.
    """
    if n_resamples < 2:
        raise ConfigError(f"n_resamples={n_resamples} must be >= 2 to compare selections")
    X = _as_matrix(X)
    yv = np.asarray(y)
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    full = HNeuronProbe(C=C, **kw).fit(X, yv)
    sets: list[set[int]] = []
    counts: dict[int, int] = {}
    for _ in range(n_resamples):
        wts = np.zeros(n)
        if groups is not None:
            g = np.asarray(groups)
            uniq, inv = np.unique(g, return_inverse=True)
            pick = np.bincount(rng.integers(0, uniq.size, uniq.size), minlength=uniq.size)
            wts = pick[inv].astype(np.float64)
        else:
            for cls in np.unique(yv):
                idx = np.flatnonzero(yv == cls)
                np.add.at(wts, idx[rng.integers(0, idx.size, idx.size)], 1.0)
        pr = HNeuronProbe(C=C, **kw).fit(X, yv, sample_weight=wts, warm_start=(full.coef_, full.intercept_))
        pos = set(np.flatnonzero(pr.coef_ > 0).tolist())
        sets.append(pos)
        for f in pos:
            counts[f] = counts.get(f, 0) + 1
    jac = []
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            u = sets[i] | sets[j]
            jac.append(len(sets[i] & sets[j]) / len(u) if u else 1.0)
    freq = {int(f): c / n_resamples for f, c in sorted(counts.items(), key=lambda t: (-t[1], t[0]))}
    full_pos = np.flatnonzero(full.coef_ > 0)
    return {
        "C": float(C),
        "n_resamples": int(n_resamples),
        "mean_jaccard": float(np.mean(jac)),
        "sd_jaccard": float(np.std(jac)),
        "n_positive": [len(s) for s in sets],
        "selection_frequency": freq,
        "full_fit_frequency": {int(f): freq.get(int(f), 0.0) for f in full_pos},
    }
