"""Row-matrix helpers of the feature store: NaN/inf checks and the memmapped row file.

Kept apart from :mod:`hneurons.core.store` (which re-exports :func:`check_finite`) because they work
on plain arrays and files, not on the store's chunk index.
"""

from __future__ import annotations

import mmap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hneurons.errors import DataError
from hneurons.rundir import read_json


def check_finite(features: dict[str, np.ndarray], qids: Sequence[str], d_ff: int, regions: Sequence[str] = ("answer",)) -> None:
    """Refuse features with NaN/inf in the given regions, naming the question and layer."""
    for region in regions:
        arr = features.get(region)
        if arr is None:
            continue
        bad = ~np.isfinite(arr)
        if bad.any():
            row, col = map(int, np.argwhere(bad)[0])
            raise DataError(
                f"features region {region!r} has {int(bad.sum())} NaN/inf values, first for question "
                f"{qids[row]!r} at layer {col // d_ff}, neuron {col % d_ff}; check that its answer span is not empty"
            )


def check_block_finite(block: np.ndarray, path: Path, region: str, row0: int, d_ff: int, qids: list[str]) -> None:
    """One line naming the chunk, question and (layer, neuron) of the first NaN/inf cell."""
    bits = block.view(np.uint16) if block.dtype == np.float16 else None
    bad = (bits & 0x7C00) == 0x7C00 if bits is not None else ~np.isfinite(block)
    if bad.any():
        r, c = map(int, np.argwhere(bad)[0])
        raise DataError(f"{path}: region {region!r} row {r} (question {qids[row0 + r]!r}), column {c} (layer {c // d_ff}, "
                        f"neuron {c % d_ff}) is {block[r, c]}; features must be finite: re-extract them")


def open_rows_memmap(folder: Path, shape: tuple[int, int], dtype: np.dtype, index_sha: str) -> tuple[np.memmap, bool]:
    """The row matrix file in ``folder``: ``(map, True)`` when it is complete for this index, else a fresh one.

    A file that its own ``rows.json`` says is complete but is shorter than that shape is refused
    (one line) instead of mapped: reading past its end would crash or read garbage.
    """
    folder.mkdir(parents=True, exist_ok=True)
    data, meta = folder / "rows.bin", folder / "rows.json"
    want = shape[0] * shape[1] * dtype.itemsize
    if meta.is_file() and data.is_file():
        rec = read_json(meta)
        if isinstance(rec, dict) and rec.get("index_sha256") == index_sha and rec.get("dtype") == dtype.name \
                and list(rec.get("shape") or []) == list(shape):
            have = data.stat().st_size
            if have < want:
                raise DataError(f"{data} holds {have} bytes but {meta} says {shape[0]} x {shape[1]} {dtype.name} "
                                f"({want} bytes); delete {folder} and map the store again")
            return np.memmap(data, dtype=dtype, mode="r", shape=shape), True
    if meta.is_file():
        meta.unlink()
    return np.memmap(data, dtype=dtype, mode="w+", shape=shape), False


def release_pages(X: np.ndarray, start: int = 0, stop: int | None = None) -> None:
    """Drop rows ``[start, stop)`` of a memory-mapped ``X`` from this process's resident set (no-op otherwise).

    Why: every page a pass reads stays mapped, so one pass over a 70B-shape memmap (4,000 × 2.3 M
    float16, 18 GB) would count the whole file in the fit's RSS although no page is needed again
    before the next pass. ``MADV_DONTNEED`` unmaps them; the OS page cache still holds what fits, so
    the next pass re-reads them from memory where it can. Rows are released whole pages at a time;
    a page shared with a neighbouring chunk is simply faulted in again by whoever reads it next.
    """
    mm = getattr(X, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or len(mm) == 0:
        return
    base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    if X.flags.c_contiguous:
        stop = X.shape[0] if stop is None else stop
        lo, hi = X.ctypes.data - base + start * X.strides[0], X.ctypes.data - base + stop * X.strides[0]
    else:  # a strided view: release the whole map
        lo, hi = 0, len(mm)
    lo -= lo % mmap.PAGESIZE
    hi = min(len(mm), hi)
    if hi > lo:
        mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


GATHER_BYTES = 64 << 20  # rows of a memmap read per step when gathering columns


def gather(X: np.ndarray, cols: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """``X[rows][:, cols]`` as float64, reading a memmap a few rows at a time and giving the pages back.

    Why: the columns of a gather lie in every row, so ``X[:, cols]`` on a 70B-shape memmap maps
    nearly the whole 18 GB file at once (and ``X[rows]`` copies whole rows); row steps keep the
    resident set to one step. In-memory arrays take the one-shot path.
    """
    cols = np.asarray(cols)
    if getattr(X, "_mmap", None) is None:  # np.ix_: only the picked cells are copied, never whole rows
        return np.asarray(X[:, cols] if rows is None else X[np.ix_(np.asarray(rows), cols)], dtype=np.float64)
    idx = np.arange(X.shape[0]) if rows is None else np.asarray(rows)
    out = np.empty((idx.size, cols.size))
    step = max(1, GATHER_BYTES // max(1, X.shape[1] * X.itemsize))
    for s in range(0, idx.size, step):
        part = idx[s : s + step]
        out[s : s + part.size] = X[part[:, None], cols[None, :]]
        release_pages(X, int(part.min()), int(part.max()) + 1)
    return out
