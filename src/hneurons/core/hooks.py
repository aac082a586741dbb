"""Forward hooks on the down-projections, as context managers that always remove themselves.

Three things touch neuron activations z (the input of each layer's down-projection):

* :func:`capture_cett` reduces CETT = |z_j|·‖W_down[:, j]‖ / ‖h‖ to per-region means *inside the
  hook*, so a batch never leaves more than [batch, regions, d_ff] per layer on the host;
* :func:`record_cett` keeps per-token CETT of a few chosen neurons (for scoring during generation);
* :func:`scale_neurons` multiplies chosen activations by α during any forward (generation included),
  and :func:`scale_down_weights` is the equivalent weight edit (the official code's method), undone
  on exit.

Mixture-of-experts layers (docs/MOE.md) have neurons (expert, j); their hooks live in
:mod:`hneurons.core.hooks_moe`. Every α is checked by :func:`check_alpha` (one wording everywhere).

Why hand-written fused hooks: each reduces its layer's activations to what the caller keeps (a
[batch, regions, d_ff] mean, or k columns) on the layer's device and copies to the host once per
forward. Keeping per-token activations (``output_hidden_states``-style, or a generic
activation-cache library) and reducing afterwards costs [batch, tokens, d_ff] per layer of memory
and a host copy per layer; ``benchmarks/extraction.py`` measures the difference.

All arithmetic on CETT is float32 whatever the model dtype (the official
``extract_activations.py`` computes it in bf16 and casts after averaging, which rounds small
activations away).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager

import numpy as np
import torch
from torch import nn

from hneurons.core.alpha import check_alpha
from hneurons.core.arch import Layout
from hneurons.core.hooks_moe import moe_capture, moe_record, moe_scale_routed
from hneurons.errors import ConfigError

__all__ = ["CETT_EPS", "capture_cett", "check_alpha", "column_norms", "down_output", "neurons_by_layer",
           "record_cett", "scale_down_weights", "scale_neurons"]

CETT_EPS = 1e-8  # official extract_activations.py


# attribute of a dense down-projection holding ((storage, version), its column norms)
_NORMS_ATTR = "_hneurons_column_norms"


def column_norms(layout: Layout, layer: int) -> torch.Tensor:
    """‖W_down[:, j]‖ for every neuron of a layer, float32, on the layer's device.

    Dense layers: cached on the module while its weight's storage and version counter are unchanged
    (an in-place edit such as :func:`scale_down_weights` bumps the version), because converting a
    bf16 matrix to float32 for every call costs ~3 ms a layer, more than the hooks of a small batch.
    MoE layers: expert by expert, so the experts' matrices are never copied side by side.
    """
    ex = layout.experts_of(layer)
    if ex is not None:
        return ex.cat([ex.down(e).detach().float().norm(dim=0) for e in range(ex.n_experts)],
                      ex.shared.down_proj.weight.detach().float().norm(dim=0) if ex.shared is not None else None, dim=0)
    module = layout.down_projs[layer]
    try:
        key = (module.weight.data_ptr(), module.weight._version)
    except RuntimeError:  # an inference tensor keeps no version counter: nothing to cache on
        return layout.down_weight(layer).detach().float().norm(dim=0)
    hit = getattr(module, _NORMS_ATTR, None)
    if hit is None or hit[0] != key:
        hit = (key, layout.down_weight(layer).detach().float().norm(dim=0))
        setattr(module, _NORMS_ATTR, hit)
    return hit[1]


def down_output(module: nn.Module, output: torch.Tensor | tuple) -> torch.Tensor:
    """CETT's h: the down-projection's output without its bias, i.e. h = W_down·z (the paper, arXiv 2512.01797 §6.1.2, Eqs. 1–3).

    None of the paper's models has FFN biases; for those that do (GPT-2, Phi, GPT-NeoX) leaving the
    bias in would make h more than the neurons' summed contribution, break Σ_j CETT ≥ 1 and let a
    constant vector dilute every neuron's share.
    """
    h = output[0] if isinstance(output, tuple) else output
    bias = getattr(module, "bias", None)
    return h - bias if isinstance(bias, torch.Tensor) else h


def neurons_by_layer(neurons: Iterable[int] | np.ndarray, d_ff: int, n_layers: int) -> dict[int, list[int]]:
    """Group flat neuron indices (``layer * d_ff + index``) by layer, checking their range."""
    grouped: dict[int, list[int]] = {}
    total = d_ff * n_layers
    for f in np.asarray(list(neurons) if not isinstance(neurons, np.ndarray) else neurons).ravel():
        f = int(f)
        if not 0 <= f < total:
            raise ConfigError(
                f"neuron index {f} is out of range for this model ({n_layers} layers × {d_ff} = {total} "
                "neurons); was the neuron set made for another model?"
            )
        grouped.setdefault(f // d_ff, []).append(f % d_ff)
    return grouped


@contextmanager
def _hooks(handles: list[torch.utils.hooks.RemovableHandle]) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def capture_cett(
    layout: Layout,
    region_masks: torch.Tensor,
    layers: Iterable[int] | None = None,
    eps: float = CETT_EPS,
    wnorms: Sequence[torch.Tensor] | None = None,
) -> Iterator[torch.Tensor]:
    """Capture per-region mean CETT of every neuron during one forward pass.

    Args:
        layout: the model's resolved layout.
        region_masks: [batch, regions, seq] 0/1 (or weights); pad positions must be 0 everywhere.
        layers: restrict to these layers (default all).
        wnorms: :func:`column_norms` of every layer, when the caller runs many batches and has
            computed them once (they cost about a third of the hooks' work per batch otherwise).

    Yields:
        A float32 CPU tensor [batch, n_layers, regions, d_ff], filled when the ``with`` block (which
        runs the forward pass) exits. A region with no tokens gives NaN (no feature), never 0.

    Each hook does one bmm of the region weights (already divided by ‖h_t‖) with |z| and keeps the
    small result on the layer's device; everything is copied to the host once per forward, so a
    GPU never waits for a per-layer device-to-host copy.
    """
    layer_ids = list(range(layout.n_layers)) if layers is None else list(layers)
    masks = region_masks.float()
    counts = masks.sum(-1, keepdim=True)  # [B, R, 1]
    weights_cpu = masks / counts.clamp(min=1.0)
    empty = (counts.squeeze(-1) == 0)  # [B, R]
    b, r, _ = masks.shape
    out = torch.full((b, layout.n_layers, r, layout.d_ff), float("nan"), dtype=torch.float32)
    results: dict[int, torch.Tensor] = {}
    weights_on: dict[torch.device, torch.Tensor] = {}
    scratch: dict[torch.device, torch.Tensor] = {}
    handles = []
    for layer in layer_ids:
        wnorm = wnorms[layer] if wnorms is not None else column_norms(layout, layer)
        weights = weights_on.setdefault(layout.device(layer), weights_cpu.to(layout.device(layer)))
        ex = layout.experts_of(layer)
        if ex is not None:
            handles += moe_capture(ex, layer, wnorm, weights, eps, layout.d_ff, results)
        else:
            handles.append(_dense_capture(layout.down_projs[layer], layer, wnorm, weights, eps, scratch, results))
    with _hooks(handles):
        yield out
    by_device: dict[torch.device, list[int]] = {}
    for layer in sorted(results):
        by_device.setdefault(results[layer].device, []).append(layer)
    for layers_here in by_device.values():
        out[:, layers_here] = torch.stack([_pad(results[i], layout.d_ff) for i in layers_here], dim=1).cpu()
    out.masked_fill_(empty[:, None, :, None], float("nan"))


def _dense_capture(module: nn.Module, layer: int, wnorm: torch.Tensor, weights: torch.Tensor, eps: float,
                   scratch: dict[torch.device, torch.Tensor],
                   results: dict[int, torch.Tensor]) -> torch.utils.hooks.RemovableHandle:
    """:func:`capture_cett`'s hook on one dense down-projection: ``results[layer]`` = [B, R, d_ff].

    One bmm of the region weights (already divided by ‖h_t‖) with |z|. |z| in float32 goes into
    one ``scratch`` buffer per device, reused by every layer: a fresh [B, T, d_ff] allocation per
    layer costs more (page faults) than the abs itself.
    """

    @torch.no_grad()
    def hook(mod: nn.Module, args: tuple, output: torch.Tensor) -> None:
        z = args[0]
        h = down_output(mod, output)
        if z.dim() == 2:  # a flat_tokens row (OPT): [B·T, d] back to [B, T, d]
            z, h = z.view(weights.shape[0], -1, z.shape[-1]), h.view(weights.shape[0], -1, h.shape[-1])
        inv = 1.0 / (h.float().norm(dim=-1) + eps)  # [B, T]
        w = weights * inv.unsqueeze(1)  # [B, R, T]
        buf = scratch.get(z.device)
        if buf is None or buf.shape != z.shape:
            buf = scratch[z.device] = torch.empty(z.shape, dtype=torch.float32, device=z.device)
        abs_z = torch.abs(z, out=buf) if z.dtype == torch.float32 else buf.copy_(z).abs_()
        results[layer] = torch.bmm(w, abs_z).mul_(wnorm)  # [B, R, d_ff]

    return module.register_forward_hook(hook)


@contextmanager
def record_cett(layout: Layout, neurons: Iterable[int] | np.ndarray, eps: float = CETT_EPS) -> Iterator[list[torch.Tensor]]:
    """Record per-token CETT of a few neurons over every forward call (prefill and decode steps).

    Yields a list that receives, per forward call, a [batch, seq, k] float32 tensor (k = number of
    neurons, in the order given); concatenate along ``seq`` to get every position of a generation.
    Values stay on the model's device until the caller moves them, so nothing per token is copied
    to the host during generation.
    """
    flat = np.asarray(list(neurons) if not isinstance(neurons, np.ndarray) else neurons, dtype=np.int64)
    grouped = neurons_by_layer(flat, layout.d_ff, layout.n_layers)
    order = {(int(f) // layout.d_ff, int(f) % layout.d_ff): i for i, f in enumerate(flat)}
    records: list[torch.Tensor] = []
    step: dict[str, torch.Tensor | None] = {"buf": None}
    last_layer = max(grouped) if grouped else -1
    shapes: dict[int, tuple[int, int]] = {}  # flat_tokens rows: each layer's [batch, seq]
    handles = []

    def emit(layer: int, vals: torch.Tensor, cols: torch.Tensor) -> None:
        buf = step["buf"]
        if buf is None:
            buf = torch.zeros(*vals.shape[:-1], len(flat), dtype=torch.float32, device=vals.device)
            step["buf"] = buf
        buf[..., cols.to(buf.device)] = vals.to(buf.device)
        if layer == last_layer:
            records.append(buf)
            step["buf"] = None

    for layer, idx in grouped.items():
        idx = [j for j in idx if j < layout.width(layer)]  # padding slots of MoE models stay 0
        ex = layout.experts_of(layer)
        if ex is not None:
            handles += moe_record(ex, layer, idx, [order[(layer, j)] for j in idx],
                                  column_norms(layout, layer), eps, emit)
            continue
        module = layout.down_projs[layer]
        dev = layout.down_weight(layer).device
        index = torch.tensor(idx, device=dev)
        wnorm = column_norms(layout, layer)[index]
        cols = torch.tensor([order[(layer, j)] for j in idx])

        def hook(mod: nn.Module, args: tuple, output: torch.Tensor, layer: int = layer,
                 index: torch.Tensor = index, wnorm: torch.Tensor = wnorm, cols: torch.Tensor = cols) -> None:
            z = args[0]
            h = down_output(mod, output)
            if z.dim() == 2 and layer in shapes:  # a flat_tokens row (OPT): restore [B, T]
                z, h = z.view(*shapes[layer], z.shape[-1]), h.view(*shapes[layer], h.shape[-1])
            emit(layer, z.index_select(-1, index).float().abs() * wnorm / (h.float().norm(dim=-1, keepdim=True) + eps),
                 cols)

        handles.append(module.register_forward_hook(hook))
        if layout.arch.flat_tokens and layout.layers is not None:
            handles.append(_batch_shape_hook(layout.layers[layer], layer, shapes))
    with _hooks(handles):
        yield records


def _batch_shape_hook(layer_module: nn.Module, layer: int,
                      shapes: dict[int, tuple[int, int]]) -> torch.utils.hooks.RemovableHandle:
    """Record the [batch, seq] of a decoder layer's input, which its FFN sees flattened (OPT)."""

    def pre_hook(mod: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        if isinstance(hidden, torch.Tensor) and hidden.dim() == 3:
            shapes[layer] = (int(hidden.shape[0]), int(hidden.shape[1]))

    return layer_module.register_forward_pre_hook(pre_hook, with_kwargs=True)


@contextmanager
def scale_neurons(
    layout: Layout,
    neurons: Iterable[int] | np.ndarray,
    alpha: float | Mapping[int, float],
) -> Iterator[None]:
    """Multiply the activations z of ``neurons`` (flat indices) by α at every position.

    α = 1 is the identity, α = 0 silences the neurons, α > 1 amplifies them (the paper, arXiv 2512.01797 §6.2.1, Eq. 5).
    ``alpha`` may also map flat index → factor. The model's weights are never touched, so the
    model is bit-identical after exit, and the hook composes with batching and generation.
    """
    flat = list(np.asarray(list(neurons) if not isinstance(neurons, np.ndarray) else neurons).ravel())
    if not flat:
        raise ConfigError("the neuron set to scale is empty; fit a probe that selects H-Neurons first")
    per = {int(f): check_alpha(alpha[int(f)], "alpha") for f in flat} if isinstance(alpha, Mapping) else None
    a = None if per is not None else check_alpha(alpha, "alpha")
    grouped = neurons_by_layer(flat, layout.d_ff, layout.n_layers)
    handles = []
    for layer, idx in grouped.items():
        idx = [j for j in idx if j < layout.width(layer)]  # padding slots of MoE models: nothing to scale
        factor = [per[layer * layout.d_ff + j] for j in idx] if per is not None else [a] * len(idx)
        ex = layout.experts_of(layer)
        if ex is None:
            handles += [_scale_inputs(layout.down_projs[layer], idx, factor)] if idx else []
            continue
        handles += moe_scale_routed(ex, idx, factor)  # the fused experts: no module per expert to hook
        shared = [(j - ex.n_routed, f) for j, f in zip(idx, factor) if j >= ex.n_routed]
        if shared:  # a shared expert is a dense FFN: scale the input of its down-projection
            handles.append(_scale_inputs(ex.shared.down_proj, [j for j, _ in shared], [f for _, f in shared]))
    with _hooks(handles):
        yield


def _scale_inputs(module: nn.Module, idx: list[int], factor: list[float]) -> torch.utils.hooks.RemovableHandle:
    """Pre-hook multiplying input coordinates ``idx`` of ``module`` (a down-projection) by ``factor``."""
    dev = module.weight.device
    index = torch.tensor(idx, device=dev)
    factors = torch.tensor(factor, device=dev)

    def pre_hook(mod: nn.Module, args: tuple) -> tuple:
        z = args[0]
        scaled = z.index_select(-1, index) * factors.to(z.dtype)
        z = z.index_copy(-1, index, scaled)
        return (z, *args[1:])

    return module.register_forward_pre_hook(pre_hook)


@contextmanager
def scale_down_weights(layout: Layout, neurons: Iterable[int] | np.ndarray, alpha: float) -> Iterator[None]:
    """Weight-editing equivalent of :func:`scale_neurons`: scale the W_down columns of ``neurons``.

    Faster when a model runs many forwards under one α (no hook per call). The original columns
    are saved and written back on exit, so even α = 0 is undone exactly.
    """
    a = check_alpha(alpha, "alpha")
    grouped = neurons_by_layer(neurons, layout.d_ff, layout.n_layers)
    if not grouped:
        raise ConfigError("the neuron set to scale is empty; fit a probe that selects H-Neurons first")
    with ExitStack() as stack:
        # [d_model, n] views (transposed for Conv1D and gpt-oss experts) and the columns to scale
        for w, idx in (col for layer, idx in grouped.items() for col in _down_columns(layout, layer, idx)):
            index = torch.tensor(idx, device=w.device)
            saved = w.detach().index_select(1, index).clone()

            def restore(w: torch.Tensor = w, index: torch.Tensor = index, saved: torch.Tensor = saved) -> None:
                with torch.no_grad():
                    w.index_copy_(1, index, saved)

            stack.callback(restore)
            with torch.no_grad():
                w.index_copy_(1, index, saved * a)
        yield



def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad the neuron axis of a narrower layer (dense layers of MoE models) to ``d_ff``."""
    return x if x.shape[-1] == width else torch.nn.functional.pad(x, (0, width - x.shape[-1]))


def _down_columns(layout: Layout, layer: int, idx: list[int]) -> list[tuple[torch.Tensor, list[int]]]:
    """(W_down view [d_model, n], its columns) holding the neurons ``idx`` of ``layer``; padding dropped."""
    idx = [j for j in idx if j < layout.width(layer)]
    ex = layout.experts_of(layer)
    if ex is None:
        return [(layout.down_weight(layer), idx)] if idx else []
    per: dict[int, list[int]] = {}
    for j in idx:
        per.setdefault(min(j // ex.width, ex.n_experts), []).append(j)
    cols = [(ex.down(e), [j - e * ex.width for j in js]) for e, js in sorted(per.items()) if e < ex.n_experts]
    if ex.n_experts in per:
        cols.append((ex.shared.down_proj.weight, [j - ex.n_routed for j in per[ex.n_experts]]))
    return cols
