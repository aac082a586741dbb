"""Neuron layout: where a loaded model keeps its FFN neurons, resolved through the adapter table.

A neuron is one input coordinate of a decoder layer's MLP down-projection (the paper, arXiv
2512.01797, §6.1.2 Eq. 1): the projection's input is the activation z (``d_ff`` wide) and its output h goes
back into the residual stream. Every supported architecture is one row of
:data:`~hneurons.core.adapters.ARCHITECTURES` (re-exported here), keyed by
``config.model_type``; everything else in the package (CETT capture, α scaling, weight drift)
goes through :class:`Layout`, so adding an architecture is adding a row.

Mixture-of-experts layers (docs/MOE.md) have one neuron per (expert, j): the row names the fused
experts module, and :class:`Experts` reads each expert's slices out of its 3-D parameters.

Modules are found by explicit attribute paths, never by name matching, so vision or audio
towers of multimodal checkpoints can never be picked up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import nn

from hneurons.core.adapters import (  # noqa: F401  (re-exported: the table's historic home)
    ARCHITECTURES,
    Arch,
    arch_for,
    model_type_of,
    supported_architectures,
    text_config,
)
from hneurons.errors import ConfigError, UnsupportedArchitecture


def _get(obj: object, path: str) -> object | None:
    """Follow a dotted attribute path; ``None`` where any step is missing (rows are tried, not trusted)."""
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj



class NeuronRef(NamedTuple):
    """Where a flat neuron index lives: ``expert`` is an int for a routed expert, ``"shared"`` for a
    shared expert and ``None`` for a dense FFN; ``index`` counts within that MLP."""

    layer: int
    expert: int | str | None
    index: int

    @property
    def name(self) -> str:
        """Short label for reports: ``L3.N17``, ``L3.E5.N17`` or ``L3.shared.N2``."""
        return neuron_label(self.layer, self.index, self.expert)


def neuron_label(layer: int, neuron: int, expert: int | str | None = None) -> str:
    """The one way a neuron is named everywhere (CLI, report, JSON): ``L3.N17``, ``L3.E5.N17``
    (routed expert 5) or ``L3.shared.N2``; ``neuron`` counts within its MLP or expert."""
    if expert is None:
        return f"L{layer}.N{neuron}"
    tag = f"E{expert}" if isinstance(expert, int) else str(expert)
    return f"L{layer}.{tag}.N{neuron}"


@dataclass
class Experts:
    """The experts of one MoE layer and how to read one expert's weights out of the fused tensors.

    Neuron order inside the layer: routed expert e's neuron j is ``e * width + j``; the shared
    expert's neuron s follows all routed ones (``n_experts * width + s``).
    """

    block: nn.Module
    module: nn.Module
    fmt: Literal["gate_up", "gpt_oss", "llama4"]
    n_experts: int
    width: int
    shared: nn.Module | None = None
    shared_scale: nn.Module | None = None
    router: nn.Module | None = None
    """Set for input-weighted experts (Llama 4): the router whose scores scale each expert's input."""

    @property
    def n_routed(self) -> int:
        """Neurons of the routed experts (they come first in the layer)."""
        return self.n_experts * self.width

    @property
    def shared_width(self) -> int:
        """Neurons of the shared expert (0 without one)."""
        return 0 if self.shared is None else int(self.shared.down_proj.weight.shape[1])

    @property
    def n_neurons(self) -> int:
        """All neurons of the layer: routed, then shared."""
        return self.n_routed + self.shared_width

    def down(self, e: int) -> torch.Tensor:
        """W_down of expert e as a [d_model, width] view (column j belongs to neuron j)."""
        w = self.module.down_proj[e]
        return w if self.fmt == "gate_up" else w.t()

    def down_bias(self) -> torch.Tensor | None:
        """Per-expert output biases [E, d_model] (gpt-oss), excluded from h like dense biases."""
        return getattr(self.module, "down_proj_bias", None)

    def _half(self, e: int, which: int) -> torch.Tensor:
        if self.fmt == "gpt_oss":  # [H, 2I], gate/up interleaved in columns
            return self.module.gate_up_proj[e][:, which::2].t()
        if self.fmt == "llama4":  # [H, 2I], gate half first in columns
            w = self.module.gate_up_proj[e]
            return (w[:, : self.width] if which == 0 else w[:, self.width:]).t()
        w = self.module.gate_up_proj[e]  # [2I, H], gate half first
        return w[: self.width] if which == 0 else w[self.width:]

    def gate(self, e: int) -> torch.Tensor:
        """Gate weights of expert e, [width, d_model]."""
        return self._half(e, 0)

    def up(self, e: int) -> torch.Tensor:
        """Up weights of expert e, [width, d_model]."""
        return self._half(e, 1)

    def activations(self, x: torch.Tensor, e: int, index: torch.Tensor | None = None) -> torch.Tensor:
        """z of expert e (optionally only neurons ``index``) for token states x [n, d_model].

        The same arithmetic as the experts module's own forward; tests compare the two.
        """
        gate, up = self.gate(e), self.up(e)
        if index is not None:
            gate, up = gate.index_select(0, index), up.index_select(0, index)
        g, u = x @ gate.t(), x @ up.t()
        if self.fmt == "gpt_oss":
            bias = self.module.gate_up_proj_bias[e]
            bg, bu = bias[0::2], bias[1::2]
            if index is not None:
                bg, bu = bg.index_select(0, index), bu.index_select(0, index)
            g = (g + bg).clamp(max=self.module.limit)
            u = (u + bu).clamp(min=-self.module.limit, max=self.module.limit)
            return (u + 1) * (g * torch.sigmoid(g * self.module.alpha))
        return self.module.act_fn(g) * u

    def cat(self, per_expert: list[torch.Tensor], shared: torch.Tensor | None, dim: int) -> torch.Tensor:
        """Per-expert pieces (and the shared expert's) joined in flat-index order."""
        return torch.cat(per_expert + ([shared] if shared is not None else []), dim=dim)


@dataclass
class Layout:
    """The resolved neuron layout of one loaded model (per-layer modules and sizes).

    Dense models: ``d_ff`` neurons per layer, flat index ``layer * d_ff + j``. MoE models: layer l
    has ``width(l)`` neurons (routed experts, then shared ones, see :class:`Experts`) and ``d_ff``
    is the widest layer, so the flat index keeps its ``layer * d_ff + j`` stride; slots of narrower
    layers (DeepSeek's dense first layers) are padding that never fires (docs/MOE.md).
    """

    model_type: str
    arch: Arch
    n_layers: int
    d_ff: int
    d_model: int
    down_projs: list[nn.Module | None]
    up_projs: list[nn.Module | None]
    gate_projs: list[nn.Module | None] | None
    experts: list[Experts | None] | None = None
    layers: list[nn.Module] | None = None
    """The decoder layers themselves (hooks of :attr:`Arch.flat_tokens` rows read the batch shape there)."""

    @property
    def n_neurons(self) -> int:
        """Total FFN neurons, ``n_layers × d_ff`` (flat index ``layer * d_ff + neuron``)."""
        return self.n_layers * self.d_ff

    def experts_of(self, layer: int) -> Experts | None:
        """The layer's experts, or ``None`` for a dense FFN layer."""
        return None if self.experts is None else self.experts[layer]

    def width(self, layer: int) -> int:
        """Neurons that exist in ``layer`` (``d_ff`` except for narrower layers of MoE models)."""
        ex = self.experts_of(layer)
        if ex is not None:
            return ex.n_neurons
        if self.experts is None:
            return self.d_ff
        w = self.down_projs[layer].weight
        return int(w.shape[1] if self.arch.weight_layout == "out_in" else w.shape[0])

    def device(self, layer: int) -> torch.device:
        """Where a layer's FFN weights live (without concatenating an MoE layer's experts)."""
        ex = self.experts_of(layer)
        return ex.module.down_proj.device if ex is not None else self.down_weight(layer).device

    def neuron(self, flat: int) -> NeuronRef:
        """Locate a flat neuron index as (layer, expert, index); padding slots are refused."""
        f = int(flat)
        if not 0 <= f < self.n_neurons:
            raise ConfigError(f"neuron index {f} is out of range for this model ({self.n_neurons} neurons)")
        layer, j = divmod(f, self.d_ff)
        ex = self.experts_of(layer)
        if j >= self.width(layer):
            raise ConfigError(f"neuron index {f} is a padding slot of layer {layer} (it has {self.width(layer)} neurons)")
        if ex is None:
            return NeuronRef(layer, None, j)
        if j < ex.n_routed:
            return NeuronRef(layer, j // ex.width, j % ex.width)
        return NeuronRef(layer, "shared", j - ex.n_routed)

    def neuron_name(self, flat: int) -> str:
        """Report label of a flat index, e.g. ``L3.N17`` (dense) or ``L3.E5.N17`` (expert 5)."""
        return self.neuron(flat).name

    def down_weight(self, layer: int) -> torch.Tensor:
        """W_down of a layer as [d_model, d_ff] (a view; column j belongs to neuron j).

        MoE layers: the experts' matrices side by side, then the shared expert's ([d_model,
        width(layer)], a copy).
        """
        ex = self.experts_of(layer)
        if ex is not None:
            return ex.cat([ex.down(e) for e in range(ex.n_experts)],
                          ex.shared.down_proj.weight if ex.shared is not None else None, dim=1)
        w = self.down_projs[layer].weight
        return w if self.arch.weight_layout == "out_in" else w.t()

    def up_weight(self, layer: int) -> torch.Tensor:
        """Input weights of the neurons as [d_ff, d_model] (row j belongs to neuron j).

        For fused ``gate_up_proj`` (Phi-3, GLM) this is the up half (the second ``d_ff`` rows).
        """
        ex = self.experts_of(layer)
        if ex is not None:
            return ex.cat([ex.up(e) for e in range(ex.n_experts)],
                          ex.shared.up_proj.weight if ex.shared is not None else None, dim=0)
        w = self.up_projs[layer].weight
        w = w if self.arch.weight_layout == "out_in" else w.t()
        width = self.width(layer)
        return w[-width:] if w.shape[0] == 2 * width else w

    def gate_weight(self, layer: int) -> torch.Tensor | None:
        """Gate weights as [d_ff, d_model] where the FFN is gated, else ``None``."""
        ex = self.experts_of(layer)
        if ex is not None:
            return ex.cat([ex.gate(e) for e in range(ex.n_experts)],
                          ex.shared.gate_proj.weight if ex.shared is not None else None, dim=0)
        if self.gate_projs is not None and self.gate_projs[layer] is not None:
            return self.gate_projs[layer].weight
        w = self.up_projs[layer].weight
        width = self.width(layer)
        return w[:width] if self.arch.weight_layout == "out_in" and w.shape[0] == 2 * width else None

    def describe(self) -> dict[str, object]:
        """Plain facts for ``hneurons info`` and the run manifest."""
        info: dict[str, object] = {
            "model_type": self.model_type,
            "n_layers": self.n_layers,
            "d_ff": self.d_ff,
            "d_model": self.d_model,
            "n_neurons": self.n_neurons,
            "down_proj": f"{self.arch.layers[0]}.{{i}}.{self.arch.down_proj}",
        }
        moe = [ex for ex in self.experts or [] if ex is not None]
        if moe:
            info.update(down_proj=f"{self.arch.layers[0]}.{{i}}.{self.arch.experts}.down_proj",
                        moe_layers=len(moe), n_experts=moe[0].n_experts, expert_width=moe[0].width,
                        shared_width=moe[0].shared_width)
        return info


def _experts(layer: nn.Module, arch: Arch, where: str) -> Experts | None:
    module = _get(layer, arch.experts) if arch.experts else None
    if module is None:
        return None
    block = _get(layer, arch.moe_block or "")
    down = getattr(module, "down_proj", None)
    if block is None or not isinstance(down, torch.Tensor) or down.dim() != 3:
        raise UnsupportedArchitecture(
            f"{where}: {arch.experts!r} is not a fused experts module (3-D down_proj) inside "
            f"{arch.moe_block!r}; fix its row in hneurons.core.arch.ARCHITECTURES."
        )
    shared = _get(layer, arch.shared) if arch.shared else None
    scale = _get(layer, arch.shared_scale) if arch.shared_scale else None
    router = _get(layer, arch.router) if arch.router else None
    if arch.router and router is None:
        raise UnsupportedArchitecture(f"{where}: no router at {arch.router!r}; fix its row in "
                                      "hneurons.core.arch.ARCHITECTURES.")
    width = down.shape[2] if arch.expert_format == "gate_up" else down.shape[1]
    return Experts(block, module, arch.expert_format, int(down.shape[0]), int(width), shared, scale, router)


def resolve(model: nn.Module) -> Layout:
    """Find the down-projection (or experts) of every decoder layer of ``model`` through the table.

    Raises :class:`UnsupportedArchitecture` when the model type has no row, or when the row's
    paths do not match this model (the number of layers found must equal ``num_hidden_layers``).
    """
    model_type = model_type_of(model.config)
    arch = arch_for(model_type)
    tcfg = text_config(model.config)
    layers = _decoder_layers(model, arch, model_type, tcfg)
    n_layers = len(layers)
    name = type(model).__name__
    experts = [_experts(layer, arch, name) for layer in layers] if arch.is_moe else None
    dense = [i for i in range(n_layers) if experts is None or experts[i] is None]
    down = _collect(layers, dense, arch.down_proj, name)
    up = _collect(layers, dense, arch.up_proj, name)
    gate = _collect(layers, dense, arch.gate_proj, name)
    assert down is not None and up is not None
    widths = []
    d_model = 0
    for i in dense:
        w = down[i].weight
        d_model, width = (w.shape[0], w.shape[1]) if arch.weight_layout == "out_in" else (w.shape[1], w.shape[0])
        widths.append(int(width))
    if experts is not None:
        for ex in experts:
            if ex is not None:
                widths.append(ex.n_neurons)
                d_model = ex.down(0).shape[0]
    d_ff = max(widths)
    _check_d_ff(arch, model_type, tcfg, d_ff)
    return Layout(model_type, arch, n_layers, int(d_ff), int(d_model), down, up, gate, experts, list(layers))


def _decoder_layers(model: nn.Module, arch: Arch, model_type: str, tcfg: object) -> nn.ModuleList | list:
    """The decoder layer list at the first of the row's paths that holds one; its length must match the config."""
    layers = None
    for path in arch.layers:
        layers = _get(model, path)
        if isinstance(layers, (nn.ModuleList, list)):
            break
    if not isinstance(layers, (nn.ModuleList, list)):
        raise UnsupportedArchitecture(
            f"{type(model).__name__} (model_type {model_type!r}) has none of the layer paths "
            f"{list(arch.layers)}; fix its row in hneurons.core.arch.ARCHITECTURES."
        )
    n_layers = int(getattr(tcfg, "num_hidden_layers", None) or getattr(tcfg, "n_layer", len(layers)))
    if len(layers) != n_layers:
        raise UnsupportedArchitecture(
            f"found {len(layers)} decoder layers at {arch.layers}, but the config says {n_layers}"
        )
    return layers


def _collect(layers: nn.ModuleList | list, dense: list[int], path: str | None, name: str) -> list[nn.Module | None] | None:
    """The weighted module at ``path`` in every dense layer (``None`` in MoE layers; ``None`` for no path)."""
    if path is None:
        return None
    mods: list[nn.Module | None] = [None] * len(layers)
    for i in dense:
        mods[i] = _get(layers[i], path)  # type: ignore[assignment]
        if mods[i] is None or not hasattr(mods[i], "weight"):
            raise UnsupportedArchitecture(
                f"{name}: not every decoder layer has a weighted module at {path!r}; "
                "fix its row in hneurons.core.arch.ARCHITECTURES."
            )
    return mods


def _check_d_ff(arch: Arch, model_type: str, tcfg: object, d_ff: int) -> None:
    """Compare the measured width with the config's intermediate size: a mismatch means a wrong weight_layout."""
    expected = getattr(tcfg, arch.d_ff_attr, None) if arch.d_ff_attr else None
    if arch.d_ff_attr and expected is None and model_type == "gpt2":
        expected = 4 * tcfg.n_embd  # GPT-2 leaves n_inner unset for the default 4 × hidden
    if expected is not None and int(expected) != d_ff:
        raise UnsupportedArchitecture(
            f"{model_type}: down-projection input width {d_ff} differs from config "
            f"{arch.d_ff_attr}={expected}; the adapter row's weight_layout is probably wrong."
        )
