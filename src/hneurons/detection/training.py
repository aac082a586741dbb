"""The training answers every baseline and control is fitted on, read back from a run directory.

The detect stage (all methods) and the origin stage (the random-neuron transfer control) fit on
the same rows as the probe: the ``features/train`` store and the labels of
``responses/labelled.parquet``. :func:`read_train_data` reads them once, the same way for both,
and refuses a store whose questions the labels do not cover.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hneurons.core.store import FeatureStore
from hneurons.detection.methods import TrainData
from hneurons.errors import StageError


@dataclass(frozen=True)
class TrainFiles:
    """Where a run keeps the training side (``root`` is the run directory)."""

    root: Path

    @property
    def probe(self) -> Path:
        return self.root / "probe" / "probe.safetensors"

    @property
    def labelled(self) -> Path:
        return self.root / "responses" / "labelled.parquet"

    @property
    def store(self) -> Path:
        return self.root / "features" / "train"

    def fingerprints(self) -> dict[str, Any]:
        """File fingerprints for a stage's ``inputs`` (None for a file not written yet)."""
        from hneurons.rundir import file_fingerprint

        files = {"probe": self.probe, "labelled": self.labelled, "train_index": self.store / "index.json"}
        return {k: file_fingerprint(p) if p.is_file() else None for k, p in files.items()}


def read_labelled(files: TrainFiles) -> dict[str, dict[str, Any]]:
    """``responses/labelled.parquet`` rows by question id."""
    import pyarrow.parquet as pq

    if not files.labelled.is_file():
        raise StageError(f"{files.labelled} is missing; run `hneurons responses` first")
    return {str(r["qid"]): r for r in pq.read_table(files.labelled).to_pylist()}


def read_train_data(files: TrainFiles, probe: Any, mode: str, model_fingerprint: str,
                    shape: tuple[int, int]) -> tuple[TrainData, list[str], dict[str, dict[str, Any]]]:
    """The training features (``answer``, and ``other`` in 3-vs-1 mode) and labels as :class:`TrainData`
    (``shape`` = (d_ff, n_layers); no token statistics), with the question ids and labelled rows."""
    regions = ["answer", "other"] if mode == "3-vs-1" else ["answer"]
    qids, feats = FeatureStore(files.store).load(regions=regions, expect_fingerprint=model_fingerprint)
    rows = read_labelled(files)
    missing = [q for q in qids if q not in rows]
    if missing:
        raise StageError(f"features/train has question {missing[0]!r} that responses/labelled.parquet lacks; "
                         "re-run `hneurons features --force`")
    labels = np.array([int(rows[q]["label"]) for q in qids], dtype=np.int64)
    d_ff, n_layers = shape
    return TrainData(feats["answer"], feats.get("other"), labels, probe, mode, d_ff, n_layers), qids, rows
