"""The on-disk feature store: chunked float16 safetensors per split, hashed and resumable.

:class:`FeatureStore` keeps extracted features as float16 (or float32) safetensors chunks, written
as they finish, so a re-run resumes at the first missing chunk. The index records each chunk's
sha256 as soon as the chunk is written; a chunk is reused and read only while it still hashes as
recorded, so a damaged chunk is re-extracted (or named) instead of silently changing the probe.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from hneurons.core import distributed
from hneurons.core.arch import Layout
from hneurons.core.features import STATS, ExtractOptions, FeatureItem, extract_cett
from hneurons.core.rows import check_block_finite, check_finite, open_rows_memmap, release_pages
from hneurons.errors import DataError, FingerprintMismatch, HNeuronsError, StageError
from hneurons.rundir import atomic_path, file_sha256, read_json, write_json

__all__ = ["FeatureStore", "StoreShape", "check_finite"]


@dataclass(frozen=True)
class StoreShape:
    """What a store's index says about its matrix, for :meth:`FeatureStore.write`."""

    n_layers: int
    d_ff: int
    model_fingerprint: str
    regions: tuple[str, ...] = ("answer", "other")
    dtype: str = "float16"
    other_scope: str = "full_sequence"


class FeatureStore:
    """Chunked on-disk features of one split: ``chunk_*.safetensors`` plus ``index.json``.

    Chunks are written atomically as extraction proceeds and the index (``complete: false`` until
    the last chunk) records each one's sha256 right after it is written; :meth:`extract` reuses a
    chunk only while its hash and metadata match, so an interrupted extraction resumes where it
    stopped and a damaged chunk is extracted again.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def index_path(self) -> Path:
        return self.path / "index.json"

    @property
    def rebuild_command(self) -> str:
        """The command that rewrites this store (named in every error about a damaged file)."""
        if self.path.parent.name == "features":
            run, name = self.path.parent.parent, self.path.name
            stage = "detect" if name.startswith("detect_") else "origin" if name.startswith("origin_") else "features"
            return f"hneurons {stage} {run} --force"
        return f"delete {self.path} and extract again"

    def _read_index(self) -> dict[str, Any]:
        idx = read_json(self.index_path)
        if not isinstance(idx, dict):
            raise StageError(f"{self.index_path} is not a feature index; rebuild it with `{self.rebuild_command}`")
        return idx

    def exists(self) -> bool:
        """Whether a complete store (its index says so) is on disk."""
        return self.index_path.is_file() and self._read_index().get("complete") is True

    def index(self) -> dict[str, Any]:
        """The store's complete index, or a StageError saying which command writes it."""
        if not self.index_path.is_file():
            raise StageError(f"{self.path} has no features; run `{self.rebuild_command.removesuffix(' --force')}` first")
        idx = self._read_index()
        if idx.get("complete") is not True:
            raise StageError(f"{self.path}: feature extraction was interrupted or written by an older version; "
                             f"run `{self.rebuild_command}`")
        return idx

    def extract(
        self,
        model: torch.nn.Module,
        layout: Layout,
        items: Sequence[FeatureItem],
        *,
        model_fingerprint: str,
        options: ExtractOptions = ExtractOptions(),
        dtype: str = "float16",
        chunk_size: int = 256,
    ) -> "FeatureStore":
        """Extract features for ``items`` chunk by chunk, reusing chunks on disk that still hash as recorded.

        ``options`` are :func:`extract_cett`'s (regions, other_scope, batching, progress); with
        ``options.stats_layer`` each chunk also keeps the answer-token :data:`STATS` of the same
        forward (float32, read back by :meth:`load_stats`). ``dtype`` and ``chunk_size`` are the store's.
        """
        regions, other_scope, stats_layer = options.regions, options.other_scope, options.stats_layer
        self.path.mkdir(parents=True, exist_ok=True)
        np_dtype = np.float16 if dtype == "float16" else np.float32
        meta = {"model_fingerprint": model_fingerprint, "regions": json.dumps(list(regions)), "dtype": dtype,
                "other_scope": other_scope, "stats_layer": json.dumps(stats_layer)}
        recorded = self._recorded_hashes()
        hashes: dict[str, str] = {}
        n_chunks = (len(items) + chunk_size - 1) // chunk_size
        chunks = [f"chunk_{c:05d}.safetensors" for c in range(n_chunks)]
        progress_index = distributed.shard_log(self.index_path)  # the index itself in one process
        for c in distributed.shard(range(n_chunks)):  # whole chunks per rank: same files as one process
            part = items[c * chunk_size:(c + 1) * chunk_size]
            name = f"chunk_{c:05d}.safetensors"
            chunk_path = self.path / name
            want = {**meta, "qids": json.dumps([it.qid for it in part])}
            if (chunk_path.is_file() and recorded.get(name) == file_sha256(chunk_path)
                    and self._chunk_meta(chunk_path) == want):
                hashes[name] = recorded[name]
                continue
            if options.progress:
                print(f"features {self.path.name}: chunk {c + 1}/{n_chunks} ({len(part)} responses)")
            feats = extract_cett(model, layout, part, options)
            arrays = {r: feats[r].astype(np_dtype) for r in regions}
            if stats_layer is not None:
                arrays.update({f"stat_{k}": feats[k] for k in STATS})
            hashes[name] = self._save_chunk(chunk_path, arrays, want)
            # hashes of chunks not reached yet are kept, so an interruption here loses nothing
            write_json(progress_index, {"complete": False, "sha256": {**recorded, **hashes}})
        hashes = {k: v for part in distributed.all_gather(hashes) for k, v in part.items()}
        if distributed.is_main():
            self._write_index(items, layout, chunks, hashes, {**meta, "model_fingerprint": model_fingerprint,
                                                              "regions": list(regions), "stats_layer": stats_layer})
        distributed.barrier(f"writing {self.index_path}")
        if distributed.is_main():  # every rank's progress index, this run's and any left by an interrupted one
            for stale in distributed.shard_files(self.index_path):
                stale.unlink(missing_ok=True)
        return self

    def _recorded_hashes(self) -> dict[str, str]:
        """Chunk hashes the index (and the shard indexes of an interrupted multi-rank run) recorded."""
        recorded: dict[str, str] = {}
        for path in [self.index_path, *distributed.shard_files(self.index_path)]:
            try:
                recorded.update(dict(read_json(path).get("sha256") or {}) if path.is_file() else {})
            except (HNeuronsError, AttributeError):  # an unreadable index: its chunks are extracted again
                continue
        return recorded

    def _write_index(self, items: Sequence[FeatureItem], layout: Layout, chunks: list[str], hashes: dict[str, str],
                     meta: dict[str, Any]) -> None:
        write_json(self.index_path, {
            "qids": [it.qid for it in items], "n": len(items), "n_neurons": layout.n_neurons, "d_ff": layout.d_ff,
            "n_layers": layout.n_layers, "regions": meta["regions"], "dtype": meta["dtype"],
            "model_fingerprint": meta["model_fingerprint"], "other_scope": meta["other_scope"], "chunks": chunks,
            "stats_layer": meta["stats_layer"], "sha256": hashes, "complete": True,
        })

    @staticmethod
    def _save_chunk(chunk_path: Path, arrays: dict[str, np.ndarray], meta: dict[str, str]) -> str:
        """Write one chunk atomically; returns its sha256 for the index."""
        with atomic_path(chunk_path) as tmp:
            save_file(arrays, str(tmp), metadata=meta)
        return file_sha256(chunk_path)

    def write(self, chunks: Iterable[tuple[Sequence[str], dict[str, np.ndarray]]], shape: StoreShape) -> "FeatureStore":
        """Write features computed elsewhere (synthetic benchmarks, imports) in the layout :meth:`extract` writes.

        ``chunks`` yields ``(qids, {region: [rows, n_neurons]})``; arrays are cast to ``shape.dtype``.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        np_dtype = np.float16 if shape.dtype == "float16" else np.float32
        qids: list[str] = []
        names: list[str] = []
        hashes: dict[str, str] = {}
        for c, (part, arrays) in enumerate(chunks):
            name = f"chunk_{c:05d}.safetensors"
            meta = {"model_fingerprint": shape.model_fingerprint, "regions": json.dumps(list(shape.regions)),
                    "dtype": shape.dtype, "other_scope": shape.other_scope, "stats_layer": json.dumps(None),
                    "qids": json.dumps(list(part))}
            hashes[name] = self._save_chunk(self.path / name, {r: arrays[r].astype(np_dtype, copy=False)
                                                               for r in shape.regions}, meta)
            names.append(name)
            qids.extend(part)
        write_json(self.index_path, {
            "qids": qids, "n": len(qids), "n_neurons": shape.n_layers * shape.d_ff, "d_ff": shape.d_ff,
            "n_layers": shape.n_layers, "regions": list(shape.regions), "dtype": shape.dtype,
            "model_fingerprint": shape.model_fingerprint, "other_scope": shape.other_scope, "chunks": names,
            "stats_layer": None, "sha256": hashes, "complete": True,
        })
        return self

    @staticmethod
    def _chunk_meta(path: Path) -> dict[str, str] | None:
        try:
            with safe_open(str(path), framework="np") as fh:
                return dict(fh.metadata() or {})
        except Exception:  # a torn or foreign file is simply re-extracted
            return None

    def _verified(self, idx: dict[str, Any], name: str) -> Path:
        """A chunk's path once its bytes hash as the index recorded; otherwise one line naming it."""
        path = self.path / name
        if not path.is_file():
            raise StageError(f"{path} is missing; rebuild it with `{self.rebuild_command}`")
        if file_sha256(path) != (idx.get("sha256") or {}).get(name):
            raise StageError(f"{path} does not match the sha256 recorded in {self.index_path} (damaged or changed "
                             f"since it was written); rebuild it with `{self.rebuild_command}`")
        return path

    def load(
        self,
        regions: Sequence[str] | None = None,
        expect_fingerprint: str | None = None,
        dtype: type = np.float32,
    ) -> tuple[list[str], dict[str, np.ndarray]]:
        """Read all chunks into one array per region (preallocated: peak RAM ≈ final size + one chunk).

        Every chunk is checked against its recorded sha256 before it is read.
        """
        idx = self.index()
        if expect_fingerprint is not None and idx["model_fingerprint"] != expect_fingerprint:
            raise FingerprintMismatch(
                f"{self.path} holds features of model {idx['model_fingerprint']}, not {expect_fingerprint}; "
                "pass --model with the model they were extracted from, or re-run `hneurons features` with this one"
            )
        regions = list(regions or idx["regions"])
        missing = [r for r in regions if r not in idx["regions"]]
        if missing:
            raise StageError(f"{self.path} has no region(s) {missing}; re-run features with them enabled")
        out = {r: np.empty((idx["n"], idx["n_neurons"]), dtype=dtype) for r in regions}
        row = 0
        for name in idx["chunks"]:
            path = self._verified(idx, name)
            try:
                with safe_open(str(path), framework="np") as fh:
                    n = None
                    for r in regions:
                        block = fh.get_tensor(r)
                        n = block.shape[0]
                        out[r][row:row + n] = block
            except (OSError, ValueError, RuntimeError) as exc:  # unreadable although the hash matched
                raise StageError(f"{path}: cannot read its features ({type(exc).__name__}); "
                                 f"rebuild it with `{self.rebuild_command}`") from None
            row += n or 0
        if row != idx["n"]:
            raise StageError(f"{self.path}: chunks hold {row} rows but the index says {idx['n']}; "
                             f"rebuild it with `{self.rebuild_command}`")
        return list(idx["qids"]), out

    def load_rows(self, regions: Sequence[str], *, expect_fingerprint: str | None = None,
                  memmap: str | Path | None = None, finite: Sequence[str] = ("answer",)) -> tuple[list[str], np.ndarray]:
        """All ``regions`` stacked in one float16/32 matrix ``[len(regions) * n, n_neurons]`` (region r at rows r*n…).

        Why: the probe's 3-vs-1 rows are answer rows then other rows, so stacking them here means the
        probe reads the store's own dtype with no float32 copy and no concatenation (peak RAM ≈ the
        matrix + one chunk). With ``memmap`` the matrix is a file in that folder instead (reused while
        it matches this index), for shapes that do not fit in memory. Each chunk is hash-checked and
        must have the index's dtype and width; ``finite`` regions must hold no NaN/inf. Either
        failure is one line naming the chunk, row and column.
        """
        idx = self.index()
        if expect_fingerprint is not None and idx["model_fingerprint"] != expect_fingerprint:
            raise FingerprintMismatch(f"{self.path} holds features of model {idx['model_fingerprint']}, not "
                                      f"{expect_fingerprint}; re-run `{self.rebuild_command}`")
        missing = [r for r in regions if r not in idx["regions"]]
        if missing:
            raise StageError(f"{self.path} has no region(s) {missing}; re-run features with them enabled")
        n, p = int(idx["n"]), int(idx["n_neurons"])
        dtype = np.dtype(np.float16 if idx.get("dtype") == "float16" else np.float32)
        shape = (len(regions) * n, p)
        if memmap is None:
            out = np.empty(shape, dtype=dtype)
        else:
            out, ready = open_rows_memmap(Path(memmap), shape, dtype, file_sha256(self.index_path))
            if ready:
                return list(idx["qids"]), out
        row = 0
        for name in idx["chunks"]:
            block_rows = self._copy_chunk(idx, name, regions, out, row, finite)
            row += block_rows
        if row != n:
            raise DataError(f"{self.path}: chunks hold {row} rows but the index says {n}; "
                            f"rebuild it with `{self.rebuild_command}`")
        if memmap is not None:
            out.flush()
            write_json(Path(memmap) / "rows.json", {"shape": list(shape), "dtype": dtype.name,
                                                    "index_sha256": file_sha256(self.index_path)})
        return list(idx["qids"]), out

    def _copy_chunk(self, idx: dict[str, Any], name: str, regions: Sequence[str], out: np.ndarray, row: int,
                    finite: Sequence[str]) -> int:
        """Copy one checked chunk into ``out`` at ``row`` (per region); returns its row count."""
        path = self._verified(idx, name)
        n, p, d_ff = int(idx["n"]), out.shape[1], int(idx["d_ff"])
        rows = None
        try:
            with safe_open(str(path), framework="np") as fh:
                for r_i, region in enumerate(regions):
                    block = fh.get_tensor(region)
                    if block.ndim != 2 or block.shape[1] != p or (rows is not None and block.shape[0] != rows):
                        raise DataError(f"{path}: region {region!r} has shape {tuple(block.shape)}, not [rows, {p}] "
                                        f"like the rest of the store; rebuild it with `{self.rebuild_command}`")
                    if block.dtype != out.dtype:
                        raise DataError(f"{path}: region {region!r} is {block.dtype} but the index says {out.dtype}; "
                                        f"rebuild it with `{self.rebuild_command}`")
                    rows = block.shape[0]
                    if row + rows > n:
                        raise DataError(f"{path}: chunks hold more than the {n} rows the index says; "
                                        f"rebuild it with `{self.rebuild_command}`")
                    if region in finite:
                        check_block_finite(block, path, region, row, d_ff, list(idx["qids"]))
                    out[r_i * n + row: r_i * n + row + rows] = block
                    # a memmap's written pages go to the page cache (dirty until written back), not our RSS
                    release_pages(out, r_i * n + row, r_i * n + row + rows)
        except DataError:
            raise
        except (OSError, ValueError, RuntimeError) as exc:  # unreadable although the hash matched
            raise StageError(f"{path}: cannot read its features ({type(exc).__name__}); "
                             f"rebuild it with `{self.rebuild_command}`") from None
        return rows or 0

    def load_stats(self) -> tuple[int, dict[str, np.ndarray]]:
        """``(stats_layer, {stat: array})`` of a store extracted with ``stats_layer``, hash-checked.

        A store written without them names the command that rewrites it.
        """
        idx = self.index()
        layer = idx.get("stats_layer")
        if layer is None:
            raise StageError(f"{self.path} holds no answer-token statistics (written by an older version or "
                             f"without stats_layer); rebuild it with `{self.rebuild_command}`")
        parts: dict[str, list[np.ndarray]] = {k: [] for k in STATS}
        for name in idx["chunks"]:
            path = self._verified(idx, name)
            try:
                with safe_open(str(path), framework="np") as fh:
                    for k in STATS:
                        parts[k].append(fh.get_tensor(f"stat_{k}"))
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                raise StageError(f"{path}: cannot read its statistics ({type(exc).__name__}); "
                                 f"rebuild it with `{self.rebuild_command}`") from None
        return int(layer), {k: np.concatenate(v) if v else np.empty((0,)) for k, v in parts.items()}
