"""CETT features: one forward pass per response, reduced to per-region means inside the hook.

For each labelled response the full sequence (prompt + response, as rendered for sampling) goes
through the model once; :func:`hneurons.hooks.capture_cett` turns every layer's down-projection
input into the mean CETT over each region (``answer``, ``other``, optionally ``prompt``), so the host
only ever holds [batch, layers, regions, d_ff].

Batches are length-bucketed and right-padded: with causal attention a real token never attends to
a pad on its right, and pads carry zero weight in every region, so batching cannot change a feature.

:class:`FeatureStore` keeps the result on disk as float16 (or float32) safetensors chunks, written
as they finish, so a re-run resumes at the first missing chunk. The index records each chunk's
sha256 as soon as the chunk is written; a chunk is reused and read only while it still hashes as
recorded, so a damaged chunk is re-extracted (or named) instead of silently changing the probe.
"""

from __future__ import annotations

import inspect
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file
from tqdm.auto import tqdm

from hneurons.arch import Layout
from hneurons.errors import DataError, FingerprintMismatch, StageError
from hneurons.generation import length_batches
from hneurons.hooks import capture_cett, column_norms
from hneurons.rundir import atomic_path, file_sha256, fingerprint_of, read_json, write_json

REGIONS = ("answer", "other", "prompt")


@dataclass(frozen=True)
class FeatureItem:
    """One response to featurise: token ids of the full sequence and where its parts are.

    ``answer`` and ``response`` are token ranges [start, end) inside ``input_ids``; the prompt is
    everything before ``response[0]``.
    """

    qid: str
    input_ids: tuple[int, ...]
    answer: tuple[int, int]
    response: tuple[int, int]


def region_masks(item: FeatureItem, seq_len: int, regions: Sequence[str], other_scope: str) -> torch.Tensor:
    """0/1 masks [regions, seq_len] for one item (positions ≥ len(item) are padding and stay 0).

    ``other`` is the official complement of the answer over the whole sequence
    (``full_sequence``) or only the response tokens outside the answer (``response_only``).
    """
    n = len(item.input_ids)
    a0, a1 = item.answer
    r0, r1 = item.response
    if not (0 <= a0 < a1 <= n and 0 <= r0 <= r1 <= n):
        raise DataError(f"{item.qid}: answer span {item.answer} / response {item.response} outside the {n}-token sequence")
    masks = torch.zeros(len(regions), seq_len)
    for i, region in enumerate(regions):
        if region == "answer":
            masks[i, a0:a1] = 1
        elif region == "other":
            if other_scope == "full_sequence":
                masks[i, :n] = 1
            else:
                masks[i, r0:r1] = 1
            masks[i, a0:a1] = 0
        elif region == "prompt":
            masks[i, :r0] = 1
        else:
            raise DataError(f"unknown feature region {region!r}; regions are {', '.join(REGIONS)}")
    return masks


@torch.inference_mode()
def extract_cett(
    model: torch.nn.Module,
    layout: Layout,
    items: Sequence[FeatureItem],
    regions: Sequence[str] = ("answer", "other"),
    other_scope: str = "full_sequence",
    batch_size: int = 16,
    max_tokens: int = 8192,
    pad_token_id: int = 0,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Mean CETT per region for every item: ``{region: float32 [n_items, n_neurons]}``.

    Row order follows ``items``; the flat neuron index is ``layer * d_ff + neuron``. A region with
    no tokens in an item gives a NaN row.
    """
    out = {r: np.empty((len(items), layout.n_neurons), dtype=np.float32) for r in regions}
    device = layout.device(0)
    try:
        device = next(model.parameters()).device  # the embedding's device under device_map
    except StopIteration:
        pass
    # Features need no logits: the LM head over every position is ~15-20% of a small model's
    # forward (vocab × d_model per token), so ask for the last position only where supported.
    skip_logits = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    wnorms = [column_norms(layout, layer) for layer in range(layout.n_layers)]  # once, not per batch
    batches = length_batches([len(it.input_ids) for it in items], batch_size, max_tokens)
    bar = tqdm(total=len(items), desc="CETT features", unit="resp", disable=not progress)
    for batch in batches:
        seq_len = max(len(items[i].input_ids) for i in batch)
        ids = torch.full((len(batch), seq_len), pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(batch), seq_len), dtype=torch.long)
        masks = torch.zeros((len(batch), len(regions), seq_len))
        for row, i in enumerate(batch):
            n = len(items[i].input_ids)
            ids[row, :n] = torch.tensor(items[i].input_ids)
            attn[row, :n] = 1
            masks[row] = region_masks(items[i], seq_len, regions, other_scope)
        with capture_cett(layout, masks, wnorms=wnorms) as feats:
            model(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False, **skip_logits)
        flat = feats.reshape(len(batch), layout.n_layers, len(regions), layout.d_ff).permute(2, 0, 1, 3)
        flat = flat.reshape(len(regions), len(batch), layout.n_neurons).numpy()
        for r, region in enumerate(regions):
            out[region][batch] = flat[r]
        bar.update(len(batch))
    bar.close()
    return out


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
        regions: Sequence[str] = ("answer", "other"),
        other_scope: str = "full_sequence",
        dtype: str = "float16",
        batch_size: int = 16,
        chunk_size: int = 256,
        pad_token_id: int = 0,
        progress: bool = True,
    ) -> "FeatureStore":
        """Extract features for ``items`` chunk by chunk, reusing chunks on disk that still hash as recorded."""
        self.path.mkdir(parents=True, exist_ok=True)
        np_dtype = np.float16 if dtype == "float16" else np.float32
        meta = {"model_fingerprint": model_fingerprint, "regions": json.dumps(list(regions)), "dtype": dtype,
                "other_scope": other_scope}
        try:
            recorded = dict(self._read_index().get("sha256") or {}) if self.index_path.is_file() else {}
        except StageError:  # an unreadable index: every chunk is extracted again
            recorded = {}
        hashes: dict[str, str] = {}
        chunks = []
        n_chunks = (len(items) + chunk_size - 1) // chunk_size
        for c in range(n_chunks):
            part = items[c * chunk_size:(c + 1) * chunk_size]
            name = f"chunk_{c:05d}.safetensors"
            chunk_path = self.path / name
            want = {**meta, "qids": json.dumps([it.qid for it in part])}
            if (chunk_path.is_file() and recorded.get(name) == file_sha256(chunk_path)
                    and self._chunk_meta(chunk_path) == want):
                hashes[name] = recorded[name]
                chunks.append(name)
                continue
            if progress:
                print(f"features {self.path.name}: chunk {c + 1}/{n_chunks} ({len(part)} responses)")
            feats = extract_cett(model, layout, part, regions, other_scope, batch_size,
                                 pad_token_id=pad_token_id, progress=progress)
            arrays = {r: feats[r].astype(np_dtype) for r in regions}
            with atomic_path(chunk_path) as tmp:
                save_file(arrays, str(tmp), metadata=want)
            hashes[name] = file_sha256(chunk_path)
            chunks.append(name)
            # hashes of chunks not reached yet are kept, so an interruption here loses nothing
            write_json(self.index_path, {"complete": False, "sha256": {**recorded, **hashes}})
        write_json(self.index_path, {
            "qids": [it.qid for it in items], "n": len(items), "n_neurons": layout.n_neurons, "d_ff": layout.d_ff,
            "n_layers": layout.n_layers, "regions": list(regions), "dtype": dtype,
            "model_fingerprint": model_fingerprint, "other_scope": other_scope, "chunks": chunks,
            "sha256": hashes, "complete": True,
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
                "re-run `hneurons features` for this model (or use --force)"
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


def pad_id(tokenizer: Any) -> int:
    """The id to pad feature batches with (pads carry zero weight, so any valid id works)."""
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0))


def answer_features(path: str | Path, loaded: Any, items: Sequence[FeatureItem], *, dtype: str = "float16",
                    batch_size: int = 16) -> np.ndarray:
    """Answer-region CETT of ``items`` kept in a store at ``path`` (detection and origin sets).

    Chunks are reused only while the items are the same ones (ids, tokens and spans); if the
    responses behind them changed, the old store is deleted first, since chunk reuse compares ids only.
    """
    store = FeatureStore(path)
    items_fp = fingerprint_of([[it.qid, list(it.input_ids), list(it.answer)] for it in items])
    marker = store.path / "items.json"
    if store.path.is_dir() and (not marker.is_file() or read_json(marker).get("items") != items_fp):
        shutil.rmtree(store.path)
    store.path.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"items": items_fp})
    store.extract(loaded.model, loaded.layout, items, model_fingerprint=loaded.fingerprint, regions=("answer",),
                  dtype=dtype, batch_size=batch_size, pad_token_id=pad_id(loaded.tokenizer))
    qids, feats = store.load(regions=["answer"], expect_fingerprint=loaded.fingerprint)
    if qids != [it.qid for it in items]:
        raise StageError(f"{store.path} does not match its items; delete it and re-run the stage")
    return feats["answer"]
