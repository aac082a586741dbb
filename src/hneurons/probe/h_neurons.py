"""Reading the H-Neurons a probe stage wrote (``probe/h_neurons.json``) as flat neuron indices."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hneurons.errors import ConfigError, StageError
from hneurons.rundir import read_json


def load_h_neurons(path: Path, d_ff: int, n_layers: int) -> np.ndarray:
    """Flat indices (``layer * d_ff + neuron``) of the H-Neurons in ``probe/h_neurons.json``."""
    data = read_json(path)
    neurons = data.get("neurons") if isinstance(data, dict) else None
    if not isinstance(neurons, list):
        raise StageError(f"{path}: no 'neurons' list; re-run the probe stage")
    flat = []
    for i, n in enumerate(neurons):
        try:
            layer, j = int(n["layer"]), int(n["neuron"])
        except (KeyError, TypeError, ValueError):
            raise StageError(f"{path}: neurons[{i}] lacks an integer 'layer' or 'neuron'; re-run the probe stage") from None
        if not (0 <= layer < n_layers and 0 <= j < d_ff):
            raise ConfigError(f"{path}: neurons[{i}] = layer {layer}, neuron {j} is outside this model "
                              f"({n_layers} layers × {d_ff}); was the probe fitted on another model?")
        flat.append(layer * d_ff + j)
    if not flat:
        raise StageError(f"{path}: the probe selected no H-Neurons (no positive weights); choose a larger C "
                         "(probe.Cs) so there is something to scale")
    return np.asarray(sorted(set(flat)), dtype=np.int64)
