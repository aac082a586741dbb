"""The sparse H-neuron probe as a scikit-learn estimator (the paper, arXiv 2512.01797, §4).

:class:`HNeuronProbe` validates input, picks the solver (``newton_cd`` in
:mod:`hneurons.probe.solver`, or scikit-learn's liblinear as the reference) and saves/loads the
fit as safetensors with JSON metadata (no pickle). The objective is in
:mod:`hneurons.probe.objective`, the matrix access in :mod:`hneurons.probe.design`, the C path
and its selection rules in :mod:`hneurons.probe.path` and :mod:`hneurons.probe.rules`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from hneurons.core.rows import release_pages
from hneurons.errors import ConfigError, DataError, NotFittedError
from hneurons.rundir.files import default_file_mode
from hneurons.probe.design import MODES, Design, as_labels, as_matrix, build_rows, check_finite_matrix, feature_stats, row_chunk
from hneurons.probe.objective import l1_logistic_objective, sigmoid
from hneurons.probe.solver import SolveSpec, solve, solve_cold
from hneurons.probe.torch_design import BACKENDS, make_design

__all__ = ["HNeuronProbe", "build_rows", "l1_logistic_objective", "liblinear_l1", "MODES", "SOLVERS"]

SOLVERS = ("auto", "newton_cd", "liblinear")
_FORMAT = "hneurons.probe.estimator/1"
_MIN_ROWS = 4
_MIN_PER_CLASS = 2


def liblinear_l1(C: float, tol: float = 1e-4, max_iter: int = 1000, random_state: int = 42) -> Any:
    """The official probe, ``LogisticRegression(penalty="l1", solver="liblinear")``, for parity checks.

    scikit-learn 1.8 deprecated ``penalty`` in favour of ``l1_ratio=1``; pick whichever this version wants.
    """
    import sklearn
    from sklearn.linear_model import LogisticRegression

    major, minor = (int(v) for v in sklearn.__version__.split(".")[:2])
    pen = {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}
    return LogisticRegression(C=C, solver="liblinear", tol=tol, max_iter=max_iter, random_state=random_state, **pen)


def read_probe_file(path: Path, fix: str) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """The header metadata and tensors of a probe's safetensors file, or one line saying ``fix``.

    safetensors holds plain arrays and a JSON header: nothing in a probe file can run code.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            return fh.metadata() or {}, {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"probe file {path} is not a readable safetensors file ({exc}); {fix}") from None


class HNeuronProbe(ClassifierMixin, BaseEstimator):
    """L1 logistic probe over flattened neuron features; positive weights are the H-neurons.

    ``d_ff`` maps flat feature ``f`` to ``(layer, neuron) = (f // d_ff, f % d_ff)`` in
    ``h_neurons_``; with ``d_ff=None`` every feature is reported as layer 0.
    ``mode`` records how the rows were built (:func:`build_rows`) and is saved with the probe.
    ``standardize=False`` is the paper-faithful setting (the paper, arXiv 2512.01797, Eq. 4): raw CETT values.
    The nine hyper-parameters stay explicit keyword arguments of ``__init__`` (not a settings
    dataclass) because scikit-learn's ``get_params``/``set_params``/``clone`` require exactly that.
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
        backend: str = "numpy",
    ):
        self.C = C
        self.mode = mode
        self.solver = solver
        self.standardize = standardize
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        self.d_ff = d_ff
        self.backend = backend

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
        if self.backend not in BACKENDS:
            raise ConfigError(f"probe backend={self.backend!r} is not one of {BACKENDS}")

    def fit(self, X: Any, y: Any, sample_weight: Any = None, *, warm_start: tuple[np.ndarray, float] | None = None,
            _path_state: tuple[np.ndarray, float] | None = None, _design: Design | None = None) -> "HNeuronProbe":
        """Fit on rows ``X`` (float16/32 arrays or memmaps are read, never copied to float64).

        ``sample_weight`` multiplies each row's loss (used for bootstrap resampling without copying
        rows). ``warm_start=(coef, intercept)`` starts the solver there (used by :func:`fit_path`),
        which also hands over ``_design``: the matrix it already checked (and uploaded, on torch).
        """
        self._check_params()
        X, y01, classes, sw = self._check_data(X, y, sample_weight)
        p = X.shape[1]
        if _design is None:
            check_finite_matrix(X)
            mean = scale = None
            if self.standardize:
                mean, scale = feature_stats(X)
        else:
            mean, scale = _design.mean, _design.scale
        t0 = time.perf_counter()
        if self.solver == "liblinear":
            coef, b, n_iter = self._fit_liblinear(X, y01, sw, mean, scale)
            obj = l1_logistic_objective(X if mean is None else (np.asarray(X, dtype=np.float64) - mean) / scale,
                                        y01, self.C, coef, b, sw)
            gap, conv, grad = float("nan"), True, None
        else:
            w0, b0 = (None, 0.0) if warm_start is None else (np.asarray(warm_start[0], dtype=np.float64), float(warm_start[1]))
            gprev, cprev = (None, None) if _path_state is None else _path_state
            design = _design if _design is not None else make_design(X, self.backend, mean, scale)
            if w0 is None:
                res = solve_cold(design, y01, float(self.C), float(self.tol), int(self.max_iter), sw)
            else:
                res = solve(design, y01, SolveSpec(float(self.C), float(self.tol), int(self.max_iter), sw, w0, b0, gprev, cprev))
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

    def _check_data(self, X: Any, y: Any, sample_weight: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray | None]:
        """Rows, 0/1 labels, classes and float64 row weights, or a DataError/ConfigError naming the problem."""
        X = as_matrix(X)
        y01, classes = as_labels(y, X.shape[0])
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
        return X, y01, classes, sw

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
        X = as_matrix(X)
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
        step = row_chunk(X)
        for s in range(0, X.shape[0], step):
            blk = np.asarray(X[s : s + step][:, nz], dtype=np.float64)
            release_pages(X, s, s + step)
            bad = ~np.isfinite(blk)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise DataError(f"X row {s + r}, column {nz[c]} is {blk[r, c]}; features must be finite")
            out[s : s + step] += blk @ w - shift
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        """``[P(class 0), P(class 1)]`` per row; class 1 = hallucinated."""
        p1 = sigmoid(self.decision_function(X))
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
        path = Path(path)
        if not path.is_file():
            raise DataError(f"probe file {path} does not exist; run the probe stage first")
        header, tensors = read_probe_file(path, "run the probe stage again")
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
