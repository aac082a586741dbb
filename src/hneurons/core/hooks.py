"""Forward hooks on the down-projections, as context managers that always remove themselves.

Three things touch neuron activations z (the input of each layer's down-projection):

* :func:`capture_cett` reduces CETT = |z_j|·‖W_down[:, j]‖ / ‖h‖ to per-region means *inside the
  hook*, so a batch never leaves more than [batch, regions, d_ff] per layer on the host;
* :func:`record_cett` keeps per-token CETT of a few chosen neurons (for scoring during generation);
* :func:`scale_neurons` multiplies chosen activations by α during any forward (generation included),
  and :func:`scale_down_weights` is the equivalent weight edit (the official code's method), undone
  on exit.

Mixture-of-experts layers (docs/MOE.md) have neurons (expert, j): the experts module is hooked
and each routed expert's z is recomputed for the tokens routed to it (the fused 3-D expert
weights have no per-expert module to hook), CETT includes the router weight and uses the whole
MoE block's output as h, and α scaling adds the scaled neurons' change to the experts' output.

All arithmetic on CETT is float32 whatever the model dtype (PAPER.md §8.20).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager

import numpy as np
import torch
from torch import nn

from hneurons.core.alpha import check_alpha
from hneurons.core.arch import Experts, Layout
from hneurons.errors import ConfigError

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
    """CETT's h: the down-projection's output without its bias, i.e. h = W_down·z (PAPER.md §3.1).

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
    # |z| in float32 goes into one scratch buffer per device, reused by every layer: a fresh
    # [B, T, d_ff] allocation per layer costs more (page faults) than the abs itself.
    scratch: dict[torch.device, torch.Tensor] = {}
    handles = []
    for layer in layer_ids:
        module = layout.down_projs[layer]
        dev = layout.device(layer)
        wnorm = wnorms[layer] if wnorms is not None else column_norms(layout, layer)
        weights = weights_on.setdefault(dev, weights_cpu.to(dev))
        ex = layout.experts_of(layer)
        if ex is not None:
            handles += _moe_capture(ex, layer, wnorm, weights, eps, layout.d_ff, results)
            continue

        @torch.no_grad()
        def hook(mod: nn.Module, args: tuple, output: torch.Tensor, layer: int = layer,
                 wnorm: torch.Tensor = wnorm, weights: torch.Tensor = weights) -> None:
            z = args[0]
            h = down_output(mod, output)
            inv = 1.0 / (h.float().norm(dim=-1) + eps)  # [B, T]
            w = weights * inv.unsqueeze(1)  # [B, R, T]
            buf = scratch.get(z.device)
            if buf is None or buf.shape != z.shape:
                buf = scratch[z.device] = torch.empty(z.shape, dtype=torch.float32, device=z.device)
            abs_z = torch.abs(z, out=buf) if z.dtype == torch.float32 else buf.copy_(z).abs_()
            results[layer] = torch.bmm(w, abs_z).mul_(wnorm)  # [B, R, d_ff]

        handles.append(module.register_forward_hook(hook))
    with _hooks(handles):
        yield out
    by_device: dict[torch.device, list[int]] = {}
    for layer in sorted(results):
        by_device.setdefault(results[layer].device, []).append(layer)
    for layers_here in by_device.values():
        out[:, layers_here] = torch.stack([_pad(results[i], layout.d_ff) for i in layers_here], dim=1).cpu()
    out.masked_fill_(empty[:, None, :, None], float("nan"))


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
            handles += _moe_record(ex, layer, idx, [order[(layer, j)] for j in idx],
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
            emit(layer, z.index_select(-1, index).float().abs() * wnorm / (h.float().norm(dim=-1, keepdim=True) + eps),
                 cols)

        handles.append(module.register_forward_hook(hook))
    with _hooks(handles):
        yield records


@contextmanager
def scale_neurons(
    layout: Layout,
    neurons: Iterable[int] | np.ndarray,
    alpha: float | Mapping[int, float],
) -> Iterator[None]:
    """Multiply the activations z of ``neurons`` (flat indices) by α at every position.

    α = 1 is the identity, α = 0 silences the neurons, α > 1 amplifies them (PAPER.md Eq. 5).
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
        if ex is not None:
            handles += _moe_scale(ex, idx, factor)
        elif idx:
            handles.append(_scale_inputs(layout.down_projs[layer], idx, factor))
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


# ---------------------------------------------------------------------------------------------
# Mixture-of-experts layers (docs/MOE.md)
# ---------------------------------------------------------------------------------------------


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


def _expert_call(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(token states [N, d_model], chosen experts [N, k], router weights [N, k]) of an experts call."""
    hidden, index, weights = [*args, *kwargs.values()][:3]
    return hidden, index, weights


def _routes(top_k_index: torch.Tensor, n_experts: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(expert, token rows, top-k slot) of every expert that got tokens, with one host sync per call.

    Ids ≥ ``n_experts`` (transformers' "masked" expert) are skipped like the experts module does.
    """
    k = top_k_index.shape[-1]
    flat = top_k_index.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=n_experts)[:n_experts].tolist()
    start = 0
    for e, c in enumerate(counts):
        if c:
            pos = order[start:start + c]
            yield e, pos // k, pos % k
        start += c


def _routed_bias(ex: Experts, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor | None:
    """Σ_k g_k · b_{e_k}: what the experts' own output biases (gpt-oss) add to h, [N, d_model]."""
    bias = ex.down_bias()
    if bias is None:
        return None
    valid = (index < ex.n_experts).to(weights.dtype)
    return ((weights * valid).unsqueeze(-1).float() * bias[index.clamp(max=ex.n_experts - 1)].float()).sum(1)


def _moe_h_hooks(ex: Experts, state: dict, on_h: Callable[[torch.Tensor, tuple[int, int]], None],
                 routed: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], object],
                 shared: bool) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks that collect one MoE block's pieces and hand h (bias-free, float32, [N, d_model]) to ``on_h``.

    ``routed(hidden, index, weights)`` runs on the experts call and its result is kept in
    ``state["routed"]``; the shared expert's z and scale are kept when ``shared`` is set.
    """

    def on_experts(mod: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        hidden, index, weights = _expert_call(args, kwargs)
        state["routed"] = routed(hidden, index, weights)
        state["bias"] = _routed_bias(ex, index, weights)

    def on_shared(mod: nn.Module, args: tuple, output: torch.Tensor) -> None:
        state["shared"] = args[0].reshape(-1, args[0].shape[-1])

    def on_scale(mod: nn.Module, args: tuple, output: torch.Tensor) -> None:
        state["scale"] = torch.sigmoid(output.float()).reshape(-1, 1)

    def on_block(mod: nn.Module, args: tuple, output: torch.Tensor | tuple) -> None:
        out = output[0] if isinstance(output, tuple) else output
        h = out.reshape(-1, out.shape[-1]).float()
        if state.get("bias") is not None:
            h = h - state["bias"]
        sb = getattr(ex.shared.down_proj, "bias", None) if ex.shared is not None else None
        if isinstance(sb, torch.Tensor):
            h = h - state.get("scale", 1.0) * sb.float()
        on_h(h, (out.shape[0], out.shape[1]) if out.dim() == 3 else (1, out.shape[0]))
        state.clear()

    handles = [ex.module.register_forward_hook(on_experts, with_kwargs=True)]
    if shared and ex.shared is not None:
        handles.append(ex.shared.down_proj.register_forward_hook(on_shared))
        if ex.shared_scale is not None:
            handles.append(ex.shared_scale.register_forward_hook(on_scale))
    handles.append(ex.block.register_forward_hook(on_block))
    return handles


def _shared_z(ex: Experts, state: dict) -> torch.Tensor:
    """|s · z| of the shared expert, [N, shared_width] float32 (s: Qwen2-MoE's sigmoid gate, else 1)."""
    z = state["shared"].float().abs()
    return z * state["scale"].abs() if "scale" in state else z


def _moe_capture(ex: Experts, layer: int, wnorm: torch.Tensor, weights: torch.Tensor, eps: float, d_ff: int,
                 results: dict[int, torch.Tensor]) -> list[torch.utils.hooks.RemovableHandle]:
    """:func:`capture_cett` for one MoE layer: per-region mean of |g·z|·‖W[:, j]‖/‖h‖ per expert neuron."""
    state: dict = {}
    width = ex.width

    @torch.no_grad()
    def routed(hidden: torch.Tensor, index: torch.Tensor, gates: torch.Tensor) -> list:
        parts = []
        for e, tok, slot in _routes(index, ex.n_experts):
            g = gates[tok, slot].float().abs().unsqueeze(-1)
            vals = ex.activations(hidden[tok], e).float().abs_().mul_(g).mul_(wnorm[e * width:(e + 1) * width])
            parts.append((e, tok, vals))
        return parts

    @torch.no_grad()
    def on_h(h: torch.Tensor, bt: tuple[int, int]) -> None:
        b, t = bt
        w = weights * (1.0 / (h.norm(dim=-1) + eps)).view(b, 1, t)  # [B, R, T]
        res = torch.zeros(b, w.shape[1], d_ff, dtype=torch.float32, device=h.device)
        for e, tok, vals in state["routed"]:
            bi, ti = tok // t, tok % t
            sel = torch.zeros(b, w.shape[1], len(tok), dtype=torch.float32, device=h.device)
            sel[bi, :, torch.arange(len(tok), device=h.device)] = w[bi, :, ti]
            res[:, :, e * width:(e + 1) * width] = sel @ vals  # Σ over this expert's tokens per item
        if ex.shared is not None:
            zs = _shared_z(ex, state).view(b, t, -1)
            res[:, :, ex.n_routed:ex.n_neurons] = torch.bmm(w, zs) * wnorm[ex.n_routed:ex.n_neurons]
        results[layer] = res

    return _moe_h_hooks(ex, state, on_h, routed, shared=True)


def _moe_record(ex: Experts, layer: int, idx: list[int], cols: list[int], wnorm: torch.Tensor, eps: float,
                emit: Callable[[int, torch.Tensor, torch.Tensor], None]) -> list[torch.utils.hooks.RemovableHandle]:
    """:func:`record_cett` for one MoE layer: per-token CETT of the chosen expert/shared neurons."""
    dev = wnorm.device
    per: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for e in sorted({j // ex.width for j in idx if j < ex.n_routed}):
        pos = [p for p, j in enumerate(idx) if j < ex.n_routed and j // ex.width == e]
        per[e] = (torch.tensor([idx[p] - e * ex.width for p in pos], device=dev), torch.tensor(pos, device=dev))
    spos = [p for p, j in enumerate(idx) if j >= ex.n_routed]
    sidx = torch.tensor([idx[p] - ex.n_routed for p in spos], device=dev)
    spos_t = torch.tensor(spos, device=dev)
    norms = wnorm[torch.tensor(idx, device=dev, dtype=torch.long)] if idx else wnorm[:0]
    state: dict = {}

    @torch.no_grad()
    def routed(hidden: torch.Tensor, index: torch.Tensor, gates: torch.Tensor) -> list:
        parts = []
        for e, tok, slot in _routes(index, ex.n_experts):
            if e in per:
                j, pos = per[e]
                z = ex.activations(hidden[tok], e, j).float().abs()
                parts.append((tok, pos, z * gates[tok, slot].float().abs().unsqueeze(-1)))
        return parts

    @torch.no_grad()
    def on_h(h: torch.Tensor, bt: tuple[int, int]) -> None:
        vals = torch.zeros(h.shape[0], len(idx), dtype=torch.float32, device=h.device)
        for tok, pos, v in state["routed"]:
            vals[tok.unsqueeze(-1), pos.unsqueeze(0)] = v
        if spos:
            vals[:, spos_t] = _shared_z(ex, state).index_select(-1, sidx)
        vals = vals * norms / (h.norm(dim=-1, keepdim=True) + eps)
        emit(layer, vals.view(*bt, len(idx)), torch.tensor(cols))

    return _moe_h_hooks(ex, state, on_h, routed, shared=bool(spos))


def _moe_scale(ex: Experts, idx: list[int], factor: list[float]) -> list[torch.utils.hooks.RemovableHandle]:
    """:func:`scale_neurons` for one MoE layer.

    Routed neurons: the experts' output gets Σ (α−1)·g·z_j·W[:, j] added for the tokens routed to
    the neuron's expert, which equals running the expert with z_j scaled by α (W_down is linear).
    Shared-expert neurons are scaled on the input of their down-projection, as in a dense FFN.
    """
    dev = ex.module.down_proj.device
    per: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for e in sorted({j // ex.width for j in idx if j < ex.n_routed}):
        sel = [(j - e * ex.width, f) for j, f in zip(idx, factor) if j < ex.n_routed and j // ex.width == e]
        per[e] = (torch.tensor([j for j, _ in sel], device=dev), torch.tensor([f - 1.0 for _, f in sel], device=dev))
    handles = []
    shared = [(j - ex.n_routed, f) for j, f in zip(idx, factor) if j >= ex.n_routed]
    if shared:
        handles.append(_scale_inputs(ex.shared.down_proj, [j for j, _ in shared], [f for _, f in shared]))
    if not per:
        return handles

    def on_experts(mod: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> torch.Tensor:
        hidden, index, gates = _expert_call(args, kwargs)
        for e, tok, slot in _routes(index, ex.n_experts):
            if e in per:
                j, extra = per[e]
                z = ex.activations(hidden[tok], e, j)
                dz = z * extra.to(z.dtype) * gates[tok, slot].unsqueeze(-1).to(z.dtype)
                output = output.index_add(0, tok, (dz @ ex.down(e).index_select(1, j).t()).to(output.dtype))
        return output

    handles.append(ex.module.register_forward_hook(on_experts, with_kwargs=True))
    return handles
