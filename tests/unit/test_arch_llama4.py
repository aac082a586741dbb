"""Llama 4's input-weighted experts against hand computations (docs/MOE.md).

Llama 4 routes differently from every other MoE row: the router's score s (sigmoid of the top-k
logits, 0 for the other experts) scales each expert's *input*, and the experts module runs every
expert on every token, stacked as [E·N, d_model]; the experts' outputs are summed unweighted, plus
a shared expert. A neuron's z is therefore the down-projection input of s·x, and CETT needs no
router factor. Checked against the raw transformers parameters, never against hneurons' own
arithmetic, on a batch of two rows (the block flattens [batch, seq]):

* output row e·N + n of the experts module equals W_down^e z^e(s_{n,e} x_n), with z from the raw
  [E, H, 2I] tensor (gate half first); unrouted rows are exactly 0;
* CETT from :func:`capture_cett` / :func:`record_cett` equals |z_j|·‖W_down^e[:, j]‖ / ‖h‖ on
  tokens routed to expert e and 0 elsewhere, h the whole block's output;
* α by hook equals α by weight edit, in logits and in each expert's output rows (KV-cached
  generation: tests/unit/test_arch_moe.py);
* the released image-text wrapper (``llama4``) resolves to the same layout as the text model.
"""

from __future__ import annotations

import torch
from transformers.activations import ACT2FN

from hneurons.core.arch import resolve
from hneurons.core.hooks import CETT_EPS, capture_cett, record_cett, scale_down_weights, scale_neurons
from tests.tiny_archs import D, E, I, K, L, assert_alpha_hook_equals_weight_edit, build

IDS = torch.tensor([[1, 7, 21, 5, 33, 9, 12, 40, 3, 60], [1, 8, 2, 50, 4, 19, 27, 6, 44, 11]])
MOE_LAYER = 1  # interleave_moe_layer_step=2: layer 0 is dense


def _tap(layout: object) -> tuple[dict, list]:
    """Record the MoE layer's router scores, experts input/output, shared-expert input and block output."""
    ex = layout.experts_of(MOE_LAYER)
    rec: dict = {}
    handles = [
        ex.router.register_forward_hook(lambda m, a, o: rec.update(scores=o[0].clone())),
        ex.module.register_forward_hook(lambda m, a, o: rec.update(x=a[0].clone(), out=o.clone())),
        ex.shared.register_forward_pre_hook(lambda m, a: rec.update(shared_x=a[0].clone())),
        ex.block.register_forward_hook(lambda m, a, o: rec.update(block=o[0].clone())),
    ]
    return rec, handles


def _hand_z(experts: torch.nn.Module, act: str, e: int, x: torch.Tensor) -> torch.Tensor:
    gu = x @ experts.gate_up_proj[e]  # [H, 2I]: gate half first
    return ACT2FN[act](gu[..., :I]) * gu[..., I:]


def test_llama4_experts_cett_and_alpha_match_the_definition() -> None:
    model = build("llama4_text")
    layout = resolve(model)
    ex = layout.experts_of(MOE_LAYER)
    cfg = model.config
    assert layout.experts_of(0) is None and ex.n_experts == E and ex.width == I
    assert layout.width(0) == cfg.intermediate_size_mlp and layout.width(MOE_LAYER) == E * I + I
    b, t = IDS.shape
    n = b * t
    rec, handles = _tap(layout)
    regions = torch.zeros(b, 2, t)
    regions[:, 0, :4], regions[:, 1, 4:] = 1, 1  # two spans per row: CETT is averaged over each
    flat = [MOE_LAYER * layout.d_ff + j for j in (0, 5, I + 3, 3 * I + 15, E * I, E * I + 7)] + [2]
    with torch.no_grad(), capture_cett(layout, regions) as feats, record_cett(layout, flat) as records:
        base = model(input_ids=IDS).logits
    for h in handles:
        h.remove()

    scores, x = rec["scores"], rec["x"].view(E, n, D)
    routed = scores > 0
    assert (routed.sum(-1) == K).all()
    expected = torch.zeros(E, n, D, dtype=torch.float64)
    z_all = torch.zeros(n, E * I + I, dtype=torch.float64)
    for e in range(E):
        torch.testing.assert_close(x[e], rec["shared_x"].view(n, D) * scores[:, e:e + 1])  # input-weighted
        z = _hand_z(ex.module, cfg.hidden_act, e, x[e])
        torch.testing.assert_close(ex.activations(x[e], e), z, rtol=1e-10, atol=1e-12)
        expected[e] = z @ ex.module.down_proj[e]
        torch.testing.assert_close(layout.down_weight(MOE_LAYER)[:, e * I:(e + 1) * I] @ z.T, expected[e].T)
        assert (z[~routed[:, e]] == 0).all()
        z_all[:, e * I:(e + 1) * I] = z
    torch.testing.assert_close(rec["out"].view(E, n, D), expected, rtol=1e-10, atol=1e-10)
    mlp = ex.shared
    xs = rec["shared_x"].view(n, D)
    zs = ACT2FN[cfg.hidden_act](xs @ mlp.gate_proj.weight.T) * (xs @ mlp.up_proj.weight.T)
    z_all[:, E * I:] = zs
    h = rec["block"].view(n, D)
    torch.testing.assert_close(h, expected.sum(0) + zs @ mlp.down_proj.weight.T, rtol=1e-10, atol=1e-10)

    hand = z_all.abs() * layout.down_weight(MOE_LAYER).norm(dim=0) / (h.norm(dim=-1, keepdim=True) + CETT_EPS)
    hand = hand.view(b, t, -1)
    got = feats[:, MOE_LAYER, :, :E * I + I].double()  # [B, R, width]
    means = regions.double() / regions.sum(-1, keepdim=True)
    torch.testing.assert_close(got, torch.einsum("brt,btj->brj", means, hand), rtol=1e-5, atol=1e-7)
    rec_moe = records[0][..., :6].double()  # [B, T, 6]
    torch.testing.assert_close(rec_moe, hand[..., [0, 5, I + 3, 3 * I + 15, E * I, E * I + 7]], rtol=1e-5, atol=1e-7)

    neurons = [MOE_LAYER * layout.d_ff + j for j in (0, 3, I + 1, 2 * I + 8, 4 * I - 1, E * I, E * I + 5)] + [4, 40]
    assert_alpha_hook_equals_weight_edit(layout, neurons, lambda: _logits(model), base)
    # row by row, not only summed over experts: the hook changes expert e's own output rows
    outs = []
    for scale in (scale_neurons, scale_down_weights):
        with scale(layout, neurons, 2.5):
            rec, handles = _tap(layout)  # after the α hook, to see the output it returns
            _logits(model)
        for h in handles:
            h.remove()
        outs.append(rec["out"])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-9, atol=1e-9)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_llama4_wrapper_resolves_to_the_text_model() -> None:
    """The released checkpoints are image-text wrappers (config ``llama4``): same neurons, other path."""
    wrapped, text = resolve(build("llama4")), resolve(build("llama4_text"))
    same = lambda d: {k: v for k, v in d.items() if k not in ("model_type", "down_proj")}  # noqa: E731
    assert wrapped.model_type == "llama4" and same(wrapped.describe()) == same(text.describe())
    assert wrapped.describe()["down_proj"].startswith("model.language_model.layers.")
    assert wrapped.experts_of(MOE_LAYER).router is not None and wrapped.n_layers == L
