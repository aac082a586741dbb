"""The design matrix: read-only access to features (float16/32, memmaps), validation and rows.

The solver only ever *reads* the feature matrix: full passes ``X^T v`` (float32 BLAS, or row
chunks for float16 / memmaps, so no float32 copy of the matrix is made) and dense blocks of a
few columns. Standardisation is applied algebraically, never materialised.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from hneurons.core.rows import gather, release_pages
from hneurons.errors import ConfigError, DataError

MODES = ("3-vs-1", "1-vs-1")
CHUNK_BYTES = 64 << 20  # row chunks for float16 / memmap passes: bounded extra memory
_WORKERS = 2  # threads converting float16 row chunks: numpy's astype is single-threaded and the bottleneck
_BLAS: ThreadpoolController | None = None


def single_thread_blas() -> Any:
    """Context limiting BLAS to one thread (controller built once: inspecting libraries is slow)."""
    global _BLAS
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def row_chunk(X: np.ndarray) -> int:
    return max(1, int(CHUNK_BYTES // max(1, X.shape[1] * 4)))


def direct_blas(X: np.ndarray) -> bool:
    """True when ``X`` can go straight to float32 BLAS without any copy."""
    return X.dtype == np.float32 and (X.flags.c_contiguous or X.flags.f_contiguous)


class Design:
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
        if direct_blas(X):
            g = (X.T @ v.astype(np.float32)).astype(np.float64)
        else:
            g = self._chunked_rmatvec(v.astype(np.float32))
        if self.mean is not None:
            g = (g - self.mean * v.sum()) / self.scale
        return g

    def _chunked_rmatvec(self, v32: np.ndarray) -> np.ndarray:
        """``X^T v`` over float32 row chunks of a float16 / float64 / memmapped ``X``.

        Why: converting the whole matrix would double (float16) its memory. Each worker converts its
        chunks into one reused buffer and runs a float32 GEMV on it, accumulating in float64; two
        workers because the conversion, not the GEMV, bounds the speed.
        """
        X, n, p = self.X, self.n, self.p
        step = row_chunk(X)
        starts = list(range(0, n, step))

        def work(part: list[int]) -> np.ndarray:
            acc = np.zeros(p)
            buf = np.empty((min(step, n), p), dtype=np.float32) if part else None
            for s in part:
                e = min(n, s + step)
                np.copyto(buf[: e - s], X[s:e], casting="unsafe")
                release_pages(X, s, e)
                acc += buf[: e - s].T @ v32[s:e]
            return acc

        if len(starts) == 1:
            return work(starts)
        with single_thread_blas(), ThreadPoolExecutor(_WORKERS) as pool:
            parts = list(pool.map(work, [starts[i::_WORKERS] for i in range(_WORKERS)]))
        return np.sum(parts, axis=0)

    def cols(self, idx: np.ndarray) -> np.ndarray:
        """Dense float64 ``[n, k]`` block of (standardised) columns ``idx``."""
        block = gather(self.X, idx)
        if self.mean is not None:
            block = (block - self.mean[idx]) / self.scale[idx]
        return block


def nonfinite_mask(block: np.ndarray) -> np.ndarray:
    """``~isfinite`` that is fast on float16 (exponent bits all ones), where numpy's is not."""
    if block.dtype == np.float16:
        return (np.ascontiguousarray(block).view(np.uint16) & 0x7C00) == 0x7C00
    return ~np.isfinite(block)


def check_finite_matrix(X: np.ndarray, what: str = "X") -> None:
    """Scan in row chunks (memmap-friendly) and name the first non-finite cell."""
    step = row_chunk(X)
    for s in range(0, X.shape[0], step):
        block = np.asarray(X[s : s + step])
        bad = nonfinite_mask(block)
        release_pages(X, s, s + step)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise DataError(
                f"{what} row {s + r}, column {c} is {block[r, c]}; the CETT features must be finite "
                "(re-extract features or drop that row)"
            )


def as_matrix(X: Any, what: str = "X") -> np.ndarray:
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


def as_labels(y: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
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


def feature_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and std in float64, accumulated over row chunks."""
    n, p = X.shape
    s1 = np.zeros(p)
    s2 = np.zeros(p)
    step = row_chunk(X)
    for s in range(0, n, step):
        blk = np.asarray(X[s : s + step], dtype=np.float64)
        release_pages(X, s, s + step)
        s1 += blk.sum(axis=0)
        s2 += (blk * blk).sum(axis=0)
    mean = s1 / n
    var = np.maximum(s2 / n - mean * mean, 0.0)
    scale = np.sqrt(var)
    scale[scale == 0] = 1.0
    return mean, scale


def build_rows(answer: np.ndarray, other: np.ndarray, labels: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows, labels and question groups for the probe (the paper, arXiv 2512.01797, §6.1.3 "Feature Construction").

    ``answer``/``other``: ``[n_questions, n_neurons]``; ``labels``: 1 = hallucinated, 0 = faithful.
    3-vs-1 stacks answer rows (label = question label) then other rows (label 0); 1-vs-1 uses answer
    rows only. Other rows that are all-NaN (empty "other" region) are dropped; the count is in
    ``build_rows.last_dropped``. ``groups`` is the question index of each row, for grouped resampling.
    """
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r} is not one of {MODES}")
    answer = as_matrix(answer, "answer")
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
    other = as_matrix(other, "other")
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


def rows_from_stack(stack: np.ndarray, labels: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`build_rows` for a matrix already stacked as ``[answer rows; other rows]`` (``FeatureStore.load_rows``).

    The result is ``stack`` itself (1-vs-1: its answer half, a view) unless some other rows are
    all-NaN (an empty "other" region), which are dropped as :func:`build_rows` drops them (a copy).
    """
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r} is not one of {MODES}")
    lab = np.asarray(labels).astype(np.int64)
    n = lab.size
    q = np.arange(n)
    build_rows.last_dropped = 0
    if mode == "1-vs-1":
        return stack[:n], lab, q
    if stack.shape[0] != 2 * n:
        raise DataError(f"stacked rows: {stack.shape[0]} rows for {n} questions; expected answer + other rows (2 x {n})")
    empty = np.zeros(n, dtype=bool)
    step = row_chunk(stack)
    for s in range(0, n, step):
        empty[s : s + step] = np.isnan(np.asarray(stack[n + s : n + s + step], dtype=np.float32)).all(axis=1)
        release_pages(stack, n + s, n + s + step)
    keep = np.flatnonzero(~empty)
    build_rows.last_dropped = int(empty.sum())
    X = stack if keep.size == n else stack[np.r_[q, n + keep]]
    y = np.concatenate([lab, np.zeros(keep.size, dtype=np.int64)])
    return X, y, np.concatenate([q, q[keep]])
