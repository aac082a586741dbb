"""Architecture adapters: where each model keeps its FFN neurons.

A neuron is one input coordinate of a decoder layer's MLP down-projection (PAPER.md §1.3): the
projection's input is the activation z (``d_ff`` wide) and its output h goes back into the
residual stream. Every supported architecture is one row of :data:`ARCHITECTURES`, keyed by
``config.model_type``; everything else in the package (CETT capture, α scaling, weight drift)
goes through :class:`Layout`, so adding an architecture is adding a row.

Modules are found by explicit attribute paths, never by name matching, so vision or audio
towers of multimodal checkpoints can never be picked up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from hneurons.errors import UnsupportedArchitecture


@dataclass(frozen=True)
class Arch:
    """One row of the adapter table.

    Attributes:
        layers: dotted attribute paths (tried in order) from the top-level model to the decoder
            layer list; several because transformers versions nest wrappers differently.
        down_proj: path inside a layer to the module whose input is z and whose output is h.
        up_proj: path to the input projection whose rows are the neurons' input weights.
        gate_proj: path to the gate projection (gated FFNs only).
        weight_layout: ``"out_in"`` for ``nn.Linear`` (weight [out, in]); ``"in_out"`` for GPT-2's
            ``Conv1D`` (weight stored transposed, [in, out]).
        d_ff_attr: config attribute holding the intermediate size (``None``: 4 × hidden size).
    """

    layers: tuple[str, ...]
    down_proj: str
    up_proj: str
    gate_proj: str | None = None
    weight_layout: Literal["out_in", "in_out"] = "out_in"
    d_ff_attr: str | None = "intermediate_size"


_GATED = dict(down_proj="mlp.down_proj", up_proj="mlp.up_proj", gate_proj="mlp.gate_proj")
_DECODER = ("model.layers",)
# Gemma 3 multimodal checkpoints wrap the text model; the path differs across transformers versions.
_GEMMA3_MM = ("model.language_model.layers", "language_model.model.layers", "model.layers")

ARCHITECTURES: dict[str, Arch] = {
    "llama": Arch(_DECODER, **_GATED),
    "mistral": Arch(_DECODER, **_GATED),
    "qwen2": Arch(_DECODER, **_GATED),
    "qwen3": Arch(_DECODER, **_GATED),
    "gemma": Arch(_DECODER, **_GATED),
    "gemma2": Arch(_DECODER, **_GATED),
    "gemma3_text": Arch(_DECODER, **_GATED),
    "gemma3": Arch(_GEMMA3_MM, **_GATED),
    "olmo": Arch(_DECODER, **_GATED),
    "olmo2": Arch(_DECODER, **_GATED),
    "granite": Arch(_DECODER, **_GATED),
    "smollm3": Arch(_DECODER, **_GATED),
    # Phi-3 fuses gate and up into one linear ([2·d_ff, d]); its first half is the gate.
    "phi3": Arch(_DECODER, down_proj="mlp.down_proj", up_proj="mlp.gate_up_proj"),
    "phi": Arch(_DECODER, down_proj="mlp.fc2", up_proj="mlp.fc1"),
    "gpt2": Arch(
        ("transformer.h",), down_proj="mlp.c_proj", up_proj="mlp.c_fc",
        weight_layout="in_out", d_ff_attr="n_inner",
    ),
    "gpt_neox": Arch(("gpt_neox.layers",), down_proj="mlp.dense_4h_to_h", up_proj="mlp.dense_h_to_4h"),
}


def _get(obj: object, path: str) -> object | None:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def model_type_of(config: object) -> str:
    """The adapter key of a config (``config.model_type``)."""
    return str(getattr(config, "model_type", "") or "")


def text_config(config: object) -> object:
    """The language-model part of a config (multimodal configs nest it as ``text_config``)."""
    sub = getattr(config, "text_config", None)
    return sub if sub is not None and hasattr(sub, "num_hidden_layers") else config


def arch_for(model_type: str) -> Arch:
    """Look up a table row, or explain which architectures are supported."""
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise UnsupportedArchitecture(
            f"model_type {model_type!r} is not in the adapter table; supported: {supported}. "
            "Add one row to hneurons.arch.ARCHITECTURES to support it."
        ) from None


@dataclass
class Layout:
    """The resolved neuron layout of one loaded model (per-layer modules and sizes)."""

    model_type: str
    arch: Arch
    n_layers: int
    d_ff: int
    d_model: int
    down_projs: list[nn.Module]
    up_projs: list[nn.Module]
    gate_projs: list[nn.Module] | None

    @property
    def n_neurons(self) -> int:
        """Total FFN neurons, ``n_layers × d_ff`` (flat index ``layer * d_ff + neuron``)."""
        return self.n_layers * self.d_ff

    def down_weight(self, layer: int) -> torch.Tensor:
        """W_down of a layer as [d_model, d_ff] (a view; column j belongs to neuron j)."""
        w = self.down_projs[layer].weight
        return w if self.arch.weight_layout == "out_in" else w.t()

    def up_weight(self, layer: int) -> torch.Tensor:
        """Input weights of the neurons as [d_ff, d_model] (row j belongs to neuron j).

        For Phi-3's fused ``gate_up_proj`` this is the up half (the second ``d_ff`` rows).
        """
        w = self.up_projs[layer].weight
        w = w if self.arch.weight_layout == "out_in" else w.t()
        return w[-self.d_ff:] if w.shape[0] == 2 * self.d_ff else w

    def gate_weight(self, layer: int) -> torch.Tensor | None:
        """Gate weights as [d_ff, d_model] where the FFN is gated, else ``None``."""
        if self.gate_projs is not None:
            return self.gate_projs[layer].weight
        w = self.up_projs[layer].weight
        return w[: self.d_ff] if self.arch.weight_layout == "out_in" and w.shape[0] == 2 * self.d_ff else None

    def describe(self) -> dict[str, object]:
        """Plain facts for ``hneurons info`` and the run manifest."""
        return {
            "model_type": self.model_type,
            "n_layers": self.n_layers,
            "d_ff": self.d_ff,
            "d_model": self.d_model,
            "n_neurons": self.n_neurons,
            "down_proj": f"{self.arch.layers[0]}.{{i}}.{self.arch.down_proj}",
        }


def resolve(model: nn.Module) -> Layout:
    """Find the down-projection of every decoder layer of ``model`` through the adapter table.

    Raises :class:`UnsupportedArchitecture` when the model type has no row, or when the row's
    paths do not match this model (the number of layers found must equal ``num_hidden_layers``).
    """
    config = model.config
    model_type = model_type_of(config)
    arch = arch_for(model_type)
    tcfg = text_config(config)
    layers = None
    for path in arch.layers:
        layers = _get(model, path)
        if isinstance(layers, (nn.ModuleList, list)):
            break
    if not isinstance(layers, (nn.ModuleList, list)):
        raise UnsupportedArchitecture(
            f"{type(model).__name__} (model_type {model_type!r}) has none of the layer paths "
            f"{list(arch.layers)}; fix its row in hneurons.arch.ARCHITECTURES."
        )
    n_layers = int(getattr(tcfg, "num_hidden_layers", None) or getattr(tcfg, "n_layer", len(layers)))
    if len(layers) != n_layers:
        raise UnsupportedArchitecture(
            f"found {len(layers)} decoder layers at {arch.layers}, but the config says {n_layers}"
        )

    def collect(path: str | None) -> list[nn.Module] | None:
        if path is None:
            return None
        mods = [_get(layer, path) for layer in layers]
        if any(m is None or not hasattr(m, "weight") for m in mods):
            raise UnsupportedArchitecture(
                f"{type(model).__name__}: not every decoder layer has a weighted module at {path!r}; "
                "fix its row in hneurons.arch.ARCHITECTURES."
            )
        return mods  # type: ignore[return-value]

    down = collect(arch.down_proj)
    up = collect(arch.up_proj)
    gate = collect(arch.gate_proj)
    assert down is not None and up is not None
    w = down[0].weight
    d_model, d_ff = (w.shape[0], w.shape[1]) if arch.weight_layout == "out_in" else (w.shape[1], w.shape[0])
    expected = getattr(tcfg, arch.d_ff_attr, None) if arch.d_ff_attr else None
    if arch.d_ff_attr and expected is None and model_type == "gpt2":
        expected = 4 * tcfg.n_embd  # GPT-2 leaves n_inner unset for the default 4 × hidden
    if expected is not None and int(expected) != d_ff:
        raise UnsupportedArchitecture(
            f"{model_type}: down-projection input width {d_ff} differs from config "
            f"{arch.d_ff_attr}={expected}; the adapter row's weight_layout is probably wrong."
        )
    return Layout(model_type, arch, n_layers, int(d_ff), int(d_model), down, up, gate)


def supported_architectures() -> list[tuple[str, Arch]]:
    """Table rows sorted by model type, for ``hneurons archs``."""
    return sorted(ARCHITECTURES.items())
