"""Follow the H-Neurons through training: one entry per checkpoint of the same model.

The paper (arXiv 2512.01797) §7 compares one base model with its instruct model; *when* in
training the H-Neurons appear is the question its snapshots cannot answer. Given checkpoints
(local directories, or cached hub revisions such as Pythia's ``stepN`` branches written
``REPO@REVISION``), :func:`follow_checkpoints` reports for each:

* ``drift`` — per-neuron drift from the checkpoint to the final model (:mod:`hneurons.origin.drift`,
  weights streamed one layer at a time, so two 70B checkpoints never sit in memory together), where
  the H-Neurons rank in it (``mean_rank_h``: normalised, 1 = changed least) and the mean raw drift
  ``1 − cos`` of the H-Neurons and of all neurons (comparable across checkpoints, unlike z-scores);
* ``transfer`` — the fitted probe applied unchanged to the checkpoint's own activations on fixed
  labelled answers (:class:`TransferItems`, e.g. the run's held-out answers): AUROC with a bootstrap
  CI. The answers stay those of the final model, so the curve shows when the checkpoint's neurons
  start to carry the probe's signal, not how the checkpoint itself would answer.

Every checkpoint is checked before any work starts (:func:`open_checkpoints`): one of another
architecture, depth, width or vocabulary is refused with one line naming it. Each entry is passed
to ``on_result`` as soon as it is done, so a caller can stream it to disk.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hneurons.core.features import FeatureItem
from hneurons.errors import ConfigError, ModelLoadError
from hneurons.origin.drift import drift_test, neuron_drift
from hneurons.origin.transfer import transfer_scores, transfer_summary
from hneurons.origin.weights import SafetensorsWeights, WeightSource, config_value, check_compatible

_STEP = re.compile(r"step[-_]?(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as given (``name``), its local directory and its training step when the name has one."""

    name: str
    path: Path
    step: int | None


def resolve_checkpoint(spec: str) -> Checkpoint:
    """A local safetensors directory, or ``REPO@REVISION`` read from the local Hugging Face cache."""
    m = _STEP.search(spec)
    step = int(m.group(1)) if m else None
    path = Path(spec).expanduser()
    if path.is_dir():
        return Checkpoint(spec, path, step)
    if "@" not in spec:
        raise ConfigError(f"--checkpoints: {spec} is not a directory; pass a local checkpoint directory or "
                          "REPO@REVISION of a revision already in the Hugging Face cache")
    from huggingface_hub import snapshot_download

    repo, revision = spec.split("@", 1)
    try:
        local = snapshot_download(repo, revision=revision, local_files_only=True)
    except Exception:  # noqa: BLE001 - any cache miss or bad name is the same advice
        raise ModelLoadError(f"--checkpoints: {spec} is not in the local Hugging Face cache; download it first "
                             f"(huggingface-cli download {repo} --revision {revision})") from None
    return Checkpoint(spec, Path(local), step)


def check_checkpoint(final: WeightSource, final_vocab: int, ckpt: SafetensorsWeights, name: str) -> None:
    """The checkpoint's neurons and vocabulary correspond one to one with the final model's."""
    check_compatible(final, ckpt, other=f"checkpoint {name}", fix="pass checkpoints of the run's own model")
    vocab = config_value(ckpt.config, "vocab_size")
    if vocab is not None and int(vocab) != final_vocab:
        raise ConfigError(f"checkpoint {name} does not match the instruct model: vocabulary size is {vocab} there but "
                          f"{final_vocab} for the instruct model; pass checkpoints of the run's own model")


@dataclass
class TransferItems:
    """Labelled answers (label 1 = hallucinated) whose CETT the probe reads at every checkpoint.

    ``store_root`` gets one feature store per checkpoint (``<root>/<index>``), so an interrupted
    run re-extracts only the checkpoints it had not finished.
    """

    probe: Any
    items: Sequence[FeatureItem]
    labels: np.ndarray
    store_root: Path
    dtype: str = "float32"
    device: str = "auto"
    batch_size: int = 16


@dataclass(frozen=True)
class CheckpointSettings:
    """Drift scope and permutations, bootstrap replicates and the seed of both tests."""

    scope: str = "global"
    permutations: int = 1000
    n_boot: int = 1000
    seed: int = 0


def _drift_entry(final: WeightSource, ckpt: SafetensorsWeights, h_idx: np.ndarray, st: CheckpointSettings) -> dict:
    drift = neuron_drift(final, ckpt, scope=st.scope)
    test = drift_test(drift, h_idx, st.permutations, st.seed)
    keep = ("n_h", "mean_rank_h", "median_rank_h", "mean_drift_h", "mean_drift_other", "perm_p", "t_p")
    raw = (drift.drift_up + drift.drift_down) / 2  # 1 − cos, before z-scoring: comparable across checkpoints
    return {**{k: test[k] for k in keep}, "mean_raw_drift_all": float(raw.mean()),
            "mean_raw_drift_h": float(raw[h_idx].mean()) if h_idx.size else None}


def _transfer_entry(ck: Checkpoint, index: int, tr: TransferItems, st: CheckpointSettings) -> dict:
    from hneurons.core.models import load_model
    from hneurons.core.answer_store import answer_features

    loaded = load_model(str(ck.path), dtype=tr.dtype, device=tr.device)
    try:
        X = answer_features(tr.store_root / str(index), loaded, tr.items, dtype="float32", batch_size=tr.batch_size)
    finally:
        del loaded
        gc.collect()
    return transfer_summary(tr.labels, transfer_scores(tr.probe, X), None, st.n_boot, st.seed)


def open_checkpoints(final: WeightSource, final_vocab: int, specs: Sequence[str]) -> list[Checkpoint]:
    """Resolve every checkpoint and refuse the first one whose neurons or vocabulary do not match
    the final model (``final``: a loaded model's :class:`~hneurons.core.arch.Layout` or
    :class:`SafetensorsWeights`; ``final_vocab`` its vocabulary size) — before any work starts."""
    cks = [resolve_checkpoint(c) for c in specs]
    for ck in cks:
        with SafetensorsWeights(ck.path) as w:
            check_checkpoint(final, final_vocab, w, ck.name)
    return cks


def follow_checkpoints(final: WeightSource, checkpoints: Sequence[Checkpoint], h_idx: Sequence[int],
                       settings: CheckpointSettings, transfer: TransferItems | None = None,
                       on_result: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """One entry per checkpoint (``name``, ``path``, ``step``, ``drift``, ``transfer``), in the order
    given; ``checkpoints`` come from :func:`open_checkpoints`."""
    h = np.unique(np.asarray(h_idx, dtype=np.int64))
    out = []
    for i, ck in enumerate(checkpoints):
        with SafetensorsWeights(ck.path) as w:
            entry: dict[str, Any] = {"name": ck.name, "path": str(ck.path), "step": ck.step,
                                     "drift": _drift_entry(final, w, h, settings), "transfer": None}
        if transfer is not None:
            entry["transfer"] = _transfer_entry(ck, i, transfer, settings)
        if on_result is not None:
            on_result(entry)
        out.append(entry)
    return out
