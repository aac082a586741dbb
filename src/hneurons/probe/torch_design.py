"""The design matrix on torch: the solver's full passes ``X^T v`` in float32 on CUDA (or CPU torch).

Same algorithm as :class:`hneurons.probe.design.Design` (the solver cannot tell them apart): only
the two reads of the matrix move to the device; the working-set Newton steps stay in float64 NumPy
on a few hundred columns. The matrix is uploaded once, row chunk by row chunk, as float32 when it
fits in the device's free memory (with a margin) and as float16 otherwise (each pass then converts
a chunk at a time on the device, which costs nothing next to the host-side conversion).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hneurons.errors import ConfigError
from hneurons.probe.design import Design, row_chunk

# numpy: the NumPy path; torch: CUDA when present, else CPU torch; torch-cpu: CPU torch (the tests'
# reference check); auto: CUDA when present and the float16 matrix fits in its free memory, else NumPy.
BACKENDS = ("numpy", "torch", "torch-cpu", "auto")
_FREE_MARGIN = 0.8  # use at most this share of the device's free memory for the matrix


def resolve_device(backend: str, nbytes32: int) -> str | None:
    """The torch device a backend runs on (see :data:`BACKENDS`), or None for the NumPy path."""
    if backend not in BACKENDS:
        raise ConfigError(f"probe backend={backend!r} is not one of {BACKENDS}")
    if backend == "numpy":
        return None
    if backend == "torch-cpu":
        return "cpu"
    import torch

    cuda = torch.cuda.is_available()
    if backend == "torch":
        return "cuda" if cuda else "cpu"
    if cuda and torch.cuda.mem_get_info()[0] * _FREE_MARGIN >= nbytes32 // 2:
        return "cuda"
    return None


class TorchDesign(Design):
    """:class:`Design` whose full passes and column reads run on a torch device."""

    def __init__(self, X: np.ndarray, device: str, mean: np.ndarray | None = None, scale: np.ndarray | None = None):
        import torch

        super().__init__(X, mean, scale)
        self.torch = torch
        self.device = torch.device(device)
        nbytes32 = self.n * self.p * 4
        if self.device.type == "cuda":
            fits = torch.cuda.mem_get_info(self.device)[0] * _FREE_MARGIN >= nbytes32
        else:
            fits = X.dtype == np.float32
        dtype = torch.float32 if fits else torch.float16
        self.T = torch.empty((self.n, self.p), dtype=dtype, device=self.device)
        step = row_chunk(X)
        for s in range(0, self.n, step):
            blk = np.ascontiguousarray(X[s : s + step])
            self.T[s : s + blk.shape[0]] = torch.from_numpy(blk).to(self.device, dtype=dtype)
        self.step = step

    def rmatvec(self, v: np.ndarray) -> np.ndarray:
        """``X_std^T v``: float32 GEMV per row chunk, accumulated in float64 (as the NumPy path)."""
        torch = self.torch
        vt = torch.as_tensor(np.asarray(v, dtype=np.float32), device=self.device)
        g = torch.zeros(self.p, dtype=torch.float64, device=self.device)
        for s in range(0, self.n, self.step):
            g += (self.T[s : s + self.step].float().T @ vt[s : s + self.step]).double()
        out = g.cpu().numpy()
        if self.mean is not None:
            out = (out - self.mean * float(np.sum(v))) / self.scale
        return out

    def cols(self, idx: np.ndarray) -> np.ndarray:
        """Dense float64 ``[n, k]`` block of (standardised) columns ``idx``."""
        it = self.torch.as_tensor(np.asarray(idx, dtype=np.int64), device=self.device)
        block = self.T.index_select(1, it).double().cpu().numpy()
        if self.mean is not None:
            block = (block - self.mean[idx]) / self.scale[idx]
        return block


def make_design(X: np.ndarray, backend: str, mean: Any = None, scale: Any = None) -> Design:
    """The NumPy or torch design for ``X`` as ``backend`` asks."""
    where = resolve_device(backend, X.shape[0] * X.shape[1] * 4)
    return Design(X, mean, scale) if where is None else TorchDesign(X, where, mean, scale)
