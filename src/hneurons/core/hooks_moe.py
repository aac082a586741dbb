"""The CETT and α hooks of mixture-of-experts layers (docs/MOE.md), used by :mod:`hneurons.core.hooks`.

An MoE layer's neurons are (expert, j). The fused 3-D expert weights have no per-expert module to
hook, so the experts module is hooked and each routed expert's z is recomputed for the tokens
routed to it (:meth:`~hneurons.core.arch.Experts.activations`); CETT includes the router weight g
(the expert's output enters h multiplied by it; for Llama 4's input-weighted experts g is 1, the
router score being inside z already) and uses the whole MoE block's output as h; α scaling adds
the scaled neurons' change to the experts' output. A shared expert is an ordinary
FFN inside the block: its z is its down-projection's input.

Like the dense hooks, everything runs in float32 and stays on the layer's device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from hneurons.core.arch import Experts


@dataclass
class _Call:
    """One call of a fused experts module, read the same way whatever the routing style.

    Gated routing (Mixtral, DeepSeek, …): the module gets the token states [N, d_model], the chosen
    experts [N, k] and the router weights [N, k], which multiply the experts' outputs.
    Input-weighted routing (Llama 4, :attr:`Experts.router`): the module gets every expert's
    input stacked, [E·N, d_model], already scaled by the router score (zero where unrouted); the
    chosen experts come from the router's hook and the output weights are 1.
    """

    hidden: torch.Tensor
    index: torch.Tensor
    gates: torch.Tensor
    stacked: bool

    def inputs(self, e: int, tok: torch.Tensor) -> torch.Tensor:
        """What expert e reads for the token rows ``tok``."""
        return self.hidden[e, tok] if self.stacked else self.hidden[tok]

    def rows(self, e: int, tok: torch.Tensor) -> torch.Tensor:
        """Where expert e's output for ``tok`` sits in the module's output."""
        return tok + e * self.hidden.shape[1] if self.stacked else tok


def _expert_call(ex: Experts, state: dict, args: tuple, kwargs: dict) -> _Call:
    """The :class:`_Call` of one experts forward (``state["route"]`` holds the router's choice)."""
    values = [*args, *kwargs.values()]
    if ex.router is None:
        hidden, index, weights = values[:3]
        return _Call(hidden, index, weights, stacked=False)
    index = state.pop("route")
    stacked = values[0].view(ex.n_experts, -1, values[0].shape[-1])
    return _Call(stacked, index, torch.ones(index.shape, dtype=stacked.dtype, device=stacked.device), stacked=True)


def _route_hook(ex: Experts, state: dict) -> list[torch.utils.hooks.RemovableHandle]:
    """For input-weighted experts: keep the router's top-k choice [N, k] for the experts call."""
    if ex.router is None:
        return []
    router = ex.router

    def on_router(mod: nn.Module, args: tuple, output: tuple) -> None:
        state["route"] = output[1].topk(router.top_k, dim=-1).indices  # (scores, logits): its own top-k

    return [router.register_forward_hook(on_router)]


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
                 routed: Callable[[_Call], object],
                 shared: bool) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks that collect one MoE block's pieces and hand h (bias-free, float32, [N, d_model]) to ``on_h``.

    ``routed(call)`` runs on the experts call and its result is kept in
    ``state["routed"]``; the shared expert's z and scale are kept when ``shared`` is set.
    """

    def on_experts(mod: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        call = _expert_call(ex, state, args, kwargs)
        state["routed"] = routed(call)
        state["bias"] = _routed_bias(ex, call.index, call.gates)

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
        on_h(h, (out.shape[0], out.shape[1]) if out.dim() == 3 else state.get("bt", (1, out.shape[0])))
        state.clear()

    def on_block_input(mod: nn.Module, args: tuple, kwargs: dict) -> None:
        x = [*args, *kwargs.values()][0]  # Llama 4's block returns [B·T, d]: keep [B, T] from its input
        state["bt"] = (x.shape[0], x.shape[1]) if x.dim() == 3 else (1, x.shape[0])

    handles = [*_route_hook(ex, state), ex.module.register_forward_hook(on_experts, with_kwargs=True)]
    if shared and ex.shared is not None:
        handles.append(ex.shared.down_proj.register_forward_hook(on_shared))
        if ex.shared_scale is not None:
            handles.append(ex.shared_scale.register_forward_hook(on_scale))
    handles.append(ex.block.register_forward_pre_hook(on_block_input, with_kwargs=True))
    handles.append(ex.block.register_forward_hook(on_block))
    return handles


def _shared_z(ex: Experts, state: dict) -> torch.Tensor:
    """|s · z| of the shared expert, [N, shared_width] float32 (s: Qwen2-MoE's sigmoid gate, else 1)."""
    z = state["shared"].float().abs()
    return z * state["scale"].abs() if "scale" in state else z


def moe_capture(ex: Experts, layer: int, wnorm: torch.Tensor, weights: torch.Tensor, eps: float, d_ff: int,
                 results: dict[int, torch.Tensor]) -> list[torch.utils.hooks.RemovableHandle]:
    """:func:`capture_cett` for one MoE layer: per-region mean of |g·z|·‖W[:, j]‖/‖h‖ per expert neuron."""
    state: dict = {}
    width = ex.width

    @torch.no_grad()
    def routed(call: _Call) -> list:
        parts = []
        for e, tok, slot in _routes(call.index, ex.n_experts):
            g = call.gates[tok, slot].float().abs().unsqueeze(-1)
            vals = ex.activations(call.inputs(e, tok), e).float().abs_().mul_(g).mul_(wnorm[e * width:(e + 1) * width])
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


def moe_record(ex: Experts, layer: int, idx: list[int], cols: list[int], wnorm: torch.Tensor, eps: float,
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
    def routed(call: _Call) -> list:
        parts = []
        for e, tok, slot in _routes(call.index, ex.n_experts):
            if e in per:
                j, pos = per[e]
                z = ex.activations(call.inputs(e, tok), e, j).float().abs()
                parts.append((tok, pos, z * call.gates[tok, slot].float().abs().unsqueeze(-1)))
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


def moe_scale_routed(ex: Experts, idx: list[int], factor: list[float]) -> list[torch.utils.hooks.RemovableHandle]:
    """:func:`~hneurons.core.hooks.scale_neurons` for the routed-expert neurons of one MoE layer.

    The experts' output gets Σ (α−1)·g·z_j·W[:, j] added for the tokens routed to the neuron's
    expert, which equals running the expert with z_j scaled by α (W_down is linear). Only
    neurons below ``ex.n_routed`` are read from ``idx``; shared-expert neurons are a dense FFN's
    and are scaled on the input of their down-projection by the caller. No hooks when none is routed.
    """
    dev = ex.module.down_proj.device
    per: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for e in sorted({j // ex.width for j in idx if j < ex.n_routed}):
        sel = [(j - e * ex.width, f) for j, f in zip(idx, factor) if j < ex.n_routed and j // ex.width == e]
        per[e] = (torch.tensor([j for j, _ in sel], device=dev), torch.tensor([f - 1.0 for _, f in sel], device=dev))
    if not per:
        return []
    state: dict = {}

    def on_experts(mod: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> torch.Tensor:
        call = _expert_call(ex, state, args, kwargs)
        for e, tok, slot in _routes(call.index, ex.n_experts):
            if e in per:
                j, extra = per[e]
                z = ex.activations(call.inputs(e, tok), e, j)
                dz = z * extra.to(z.dtype) * call.gates[tok, slot].unsqueeze(-1).to(z.dtype)
                output = output.index_add(0, call.rows(e, tok), (dz @ ex.down(e).index_select(1, j).t()).to(output.dtype))
        return output

    return [*_route_hook(ex, state), ex.module.register_forward_hook(on_experts, with_kwargs=True)]
