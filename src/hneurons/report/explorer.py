"""The neuron explorer: one card per H-Neuron, built only from what the run directory holds.

Why: a list of ``L14.N1315`` labels says where the probe put weight, not what the neuron does. For
each H-Neuron (weight order, at most :data:`MAX_NEURONS`) the card shows its layer, in-layer index
(and expert), probe weight, how often the stability resamples selected it, its mean answer-span
CETT by class (faithful / hallucinated) with a 95 % t-interval, and the answers of each class on
which it fired most, with the answer span highlighted in proportion to that activation.

Inputs (all optional but ``probe/h_neurons.json``; a missing one turns its part into a reason):

- ``probe/h_neurons.json``: ``neurons`` ``{layer, neuron, weight[, expert, name]}``;
- ``probe/stability.json``: ``frequency`` ``{layer, neuron, freq}`` (absent neuron: never selected);
- ``features/{train,heldout}/``: the answer-region CETT per question, flat column ``layer * d_ff +
  neuron``; only the H-Neurons' columns are read, chunk by chunk, each chunk hash-checked against
  its ``index.json`` (peak memory is one chunk, whatever the model's size);
- ``responses/labelled.parquet``: ``qid, question, response, label, span_text``.

Highlighting is at the answer-span level, not per token: the feature store keeps one value per
answer (the mean over its tokens), and re-running the model at report time would make the report
need the model and a forward pass per answer. The page says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hneurons.errors import StageError
from hneurons.rundir import file_sha256, read_json

__all__ = ["MAX_NEURONS", "TOP_ANSWERS", "Activations", "anchor", "class_mean_ci", "highlight",
           "load_activations", "top_answers"]

MAX_NEURONS = 50  # cards on the page (weight order)
TOP_ANSWERS = 3  # answers shown per class and neuron
SPLITS = ("train", "heldout")


def anchor(label: str) -> str:
    """The HTML id of a neuron's card (``L3.E5.N17`` → ``neuron-L3.E5.N17``): labels are [A-Za-z0-9.]."""
    return f"neuron-{label}"


@dataclass(frozen=True)
class Activations:
    """Answer-region CETT of some neurons: ``values[i, k]`` is question ``qids[i]``, neuron ``cols[k]``."""

    qids: list[str]
    cols: list[int]
    values: np.ndarray


def _store_columns(path: Path, cols: list[int]) -> tuple[list[str], np.ndarray]:
    """``cols`` of the ``answer`` region of one feature store, every chunk checked against its sha256."""
    idx = read_json(path / "index.json")
    if not isinstance(idx, dict) or idx.get("complete") is not True:
        raise StageError(f"{path} holds no complete feature store; run `hneurons features {path.parent.parent}`")
    from safetensors import safe_open

    parts = []
    for name in idx["chunks"]:
        chunk = path / name
        if not chunk.is_file() or file_sha256(chunk) != (idx.get("sha256") or {}).get(name):
            raise StageError(f"{chunk} is missing or does not match the sha256 in {path}/index.json; "
                             f"rebuild it with `hneurons features {path.parent.parent} --force`")
        with safe_open(str(chunk), framework="np") as fh:
            parts.append(np.asarray(fh.get_tensor("answer")[:, cols], dtype=np.float64))
    values = np.concatenate(parts) if parts else np.empty((0, len(cols)))
    if values.shape[0] != len(idx["qids"]):
        raise StageError(f"{path}: chunks hold {values.shape[0]} rows but the index lists {len(idx['qids'])} questions")
    return [str(q) for q in idx["qids"]], values


def load_activations(features_dir: Path, cols: list[int]) -> Activations:
    """The H-Neurons' answer CETT over the train and held-out stores that exist (at least one)."""
    qids: list[str] = []
    blocks = []
    for split in SPLITS:
        if (features_dir / split / "index.json").is_file():
            q, v = _store_columns(features_dir / split, cols)
            qids += q
            blocks.append(v)
    if not blocks:
        raise StageError(f"{features_dir} has no train or heldout feature store")
    return Activations(qids, cols, np.concatenate(blocks))


def class_mean_ci(values: np.ndarray) -> tuple[float, float, float, int]:
    """``(mean, lo, hi, n)``: Student-t 95 % interval of the mean (NaN bounds for n < 2)."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64)
    n = int(v.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(v.mean())
    if n < 2:
        return mean, math.nan, math.nan, 1
    half = float(t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


def top_answers(values: np.ndarray, qids: list[str], labels: dict[str, int], label: int, k: int) -> list[tuple[str, float]]:
    """The ``k`` questions of class ``label`` with the highest activation, highest first (ties by qid)."""
    pairs = [(q, float(v)) for q, v in zip(qids, values) if labels.get(q) == label and math.isfinite(float(v))]
    return sorted(pairs, key=lambda p: (-p[1], p[0]))[:k]


def highlight(response: str, span: str, strength: float) -> list[tuple[str, float | None]]:
    """The response as ``(text, strength)`` segments: the answer span (its first occurrence) carries the
    neuron's activation scaled to [0, 1] (negative values as 0), the rest ``None``. A span not found in
    the text is appended after it, marked, so the reader still sees what was measured."""
    s = max(0.0, min(1.0, strength)) if math.isfinite(strength) else 0.0
    at = response.find(span) if span else -1
    if at < 0:
        return [(response, None)] + ([(" … answer span: ", None), (span, s)] if span else [])
    segs = [(response[:at], None), (span, s), (response[at + len(span):], None)]
    return [(t, v) for t, v in segs if t]
