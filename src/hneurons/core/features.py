"""CETT features: one forward pass per response, reduced to per-region means inside the hook.

For each labelled response the full sequence (prompt + response, as rendered for sampling) goes
through the model once; :func:`hneurons.core.hooks.capture_cett` turns every layer's down-projection
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

from hneurons.core.arch import Layout
from hneurons.errors import DataError, FingerprintMismatch, StageError
from hneurons.core.generation import length_batches
from hneurons.core.hooks import capture_cett, column_norms
from hneurons.rundir import atomic_path, file_sha256, fingerprint_of, read_json, write_json

REGIONS = ("answer", "other", "prompt")
# answer-token statistics the same forward can give (``stats_layer``): mean log-probability and
# predictive entropy of the answer tokens, and the residual stream averaged over them
STATS = ("logprob", "entropy", "residual")


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


def _logit_positions(items: Sequence[FeatureItem], batch: Sequence[int]) -> torch.Tensor:
    """Positions whose logits predict some answer token of the batch (a0 − 1 … a1 − 2 of each row)."""
    keep: set[int] = set()
    for i in batch:
        a0, a1 = items[i].answer
        if not 1 <= a0 < a1 <= len(items[i].input_ids):
            raise DataError(f"{items[i].qid}: answer span {items[i].answer} must lie after the first token")
        keep.update(range(a0 - 1, a1 - 1))
    return torch.tensor(sorted(keep), dtype=torch.long)


def _answer_stats(logits: torch.Tensor, kept: torch.Tensor | None, hidden: torch.Tensor, ids: torch.Tensor,
                  items: Sequence[FeatureItem], batch: Sequence[int], out: dict[str, np.ndarray]) -> None:
    """Fill ``out``'s :data:`STATS` rows of one batch.

    Token t of the answer is predicted by the logits at t − 1, so for the span [a0, a1) the scores
    average over positions a0 − 1 … a1 − 2: logprob = mean log p(x_t | x_<t), entropy = mean
    H(p(· | x_<t)) in nats. ``kept`` lists the positions ``logits`` holds (None: all of them).
    """
    where = None if kept is None else {int(p): k for k, p in enumerate(kept.tolist())}
    for row, i in enumerate(batch):
        a0, a1 = items[i].answer
        cols = list(range(a0 - 1, a1 - 1)) if where is None else [where[p] for p in range(a0 - 1, a1 - 1)]
        logp = torch.log_softmax(logits[row, cols].float(), dim=-1)
        target = ids[row, a0:a1].to(logp.device)
        out["logprob"][i] = float(logp.gather(-1, target[:, None]).mean())
        out["entropy"][i] = float(-(logp.exp() * logp).sum(-1).mean())
        out["residual"][i] = hidden[row, a0:a1].float().mean(0).cpu().numpy()


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
    stats_layer: int | None = None,
) -> dict[str, np.ndarray]:
    """Mean CETT per region for every item: ``{region: float32 [n_items, n_neurons]}``.

    Row order follows ``items``; the flat neuron index is ``layer * d_ff + neuron``. A region with
    no tokens in an item gives a NaN row. With ``stats_layer`` the same forward also gives the
    answer-token :data:`STATS` (``logprob``/``entropy`` [n], ``residual`` [n, d_model] taken from
    ``hidden_states[stats_layer]``: 0 = embeddings, i = output of block i), so the detection
    baselines that need them cost no second pass over the items.
    """
    out = {r: np.empty((len(items), layout.n_neurons), dtype=np.float32) for r in regions}
    if stats_layer is not None:
        out.update(logprob=np.empty(len(items), dtype=np.float32), entropy=np.empty(len(items), dtype=np.float32),
                   residual=np.empty((len(items), layout.d_model), dtype=np.float32))
    device = layout.device(0)
    try:
        device = next(model.parameters()).device  # the embedding's device under device_map
    except StopIteration:
        pass
    # The LM head over every position is ~15-20% of a small model's forward (vocab × d_model per
    # token): features ask for the last position only, statistics for the answer positions only.
    keep_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
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
        # the span check runs for every model; positions are passed only where the forward takes them
        kept = _logit_positions(items, batch) if stats_layer is not None else None
        kwargs: dict[str, Any] = {} if stats_layer is None else {"output_hidden_states": True}
        if keep_logits:
            kwargs["logits_to_keep"] = 1 if kept is None else kept.to(device)
        else:
            kept = None  # full logits: _answer_stats indexes positions directly
        with capture_cett(layout, masks, wnorms=wnorms) as feats:
            res = model(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False, **kwargs)
        if stats_layer is not None:
            _answer_stats(res.logits, kept, res.hidden_states[stats_layer], ids, items, batch, out)
        flat = feats.reshape(len(batch), layout.n_layers, len(regions), layout.d_ff).permute(2, 0, 1, 3)
        flat = flat.reshape(len(regions), len(batch), layout.n_neurons).numpy()
        for r, region in enumerate(regions):
            out[region][batch] = flat[r]
        bar.update(len(batch))
    bar.close()
    return out


def residual_layer(n_layers: int) -> int:
    """Where the stored statistics read the residual stream: ``hidden_states[n_layers // 2]``,
    the output of the middle block (the residual-probe baseline's layer)."""
    return n_layers // 2


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
        stats_layer: int | None = None,
    ) -> "FeatureStore":
        """Extract features for ``items`` chunk by chunk, reusing chunks on disk that still hash as recorded.

        With ``stats_layer`` each chunk also keeps the answer-token :data:`STATS` of the same
        forward (float32, read back by :meth:`load_stats`).
        """
        self.path.mkdir(parents=True, exist_ok=True)
        np_dtype = np.float16 if dtype == "float16" else np.float32
        meta = {"model_fingerprint": model_fingerprint, "regions": json.dumps(list(regions)), "dtype": dtype,
                "other_scope": other_scope, "stats_layer": json.dumps(stats_layer)}
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
                                 pad_token_id=pad_token_id, progress=progress, stats_layer=stats_layer)
            arrays = {r: feats[r].astype(np_dtype) for r in regions}
            if stats_layer is not None:
                arrays.update({f"stat_{k}": feats[k] for k in STATS})
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
            "stats_layer": stats_layer, "sha256": hashes, "complete": True,
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


def pad_id(tokenizer: Any) -> int:
    """The id to pad feature batches with (pads carry zero weight, so any valid id works)."""
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0))


def answer_features(path: str | Path, loaded: Any, items: Sequence[FeatureItem], *, dtype: str = "float16",
                    batch_size: int = 16, stats_layer: int | None = None) -> np.ndarray:
    """Answer-region CETT of ``items`` kept in a store at ``path`` (detection and origin sets).

    Chunks are reused only while the items are the same ones (ids, tokens and spans); if the
    responses behind them changed, the old store is deleted first, since chunk reuse compares ids
    only. With ``stats_layer`` the store also keeps the answer-token statistics
    (``FeatureStore(path).load_stats()``).
    """
    store = FeatureStore(path)
    items_fp = fingerprint_of([[it.qid, list(it.input_ids), list(it.answer)] for it in items])
    marker = store.path / "items.json"
    if store.path.is_dir() and (not marker.is_file() or read_json(marker).get("items") != items_fp):
        shutil.rmtree(store.path)
    store.path.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"items": items_fp})
    store.extract(loaded.model, loaded.layout, items, model_fingerprint=loaded.fingerprint, regions=("answer",),
                  dtype=dtype, batch_size=batch_size, pad_token_id=pad_id(loaded.tokenizer), stats_layer=stats_layer)
    qids, feats = store.load(regions=["answer"], expect_fingerprint=loaded.fingerprint)
    if qids != [it.qid for it in items]:
        raise StageError(f"{store.path} does not match its items; delete it and re-run the stage")
    return feats["answer"]
