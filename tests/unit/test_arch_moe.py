"""Mixture-of-experts rows: expert neurons (layer, expert, j) against hand computations (docs/MOE.md).

Every MoE row is built tiny (tests/tiny_archs.py: 4 experts, top-2, random weights in float64)
and checked against the transformers module itself, never against hneurons' own arithmetic:

* the experts module's output equals Σ_k g_k·(W_down^e z^e + b^e), with z^e computed here from the
  raw fused parameters (gate/up halves, activation, gpt-oss's clamped GLU) — so the row's reading
  of the 3-D tensors and :meth:`Experts.activations` are right; the block output adds the shared
  expert (times Qwen2-MoE's sigmoid gate);
* α by hook (:func:`scale_neurons`) gives the logits, and greedy generations with a KV cache, of
  the weight edit (:func:`scale_down_weights`);
* CETT from :func:`capture_cett` / :func:`record_cett` equals the definition computed token by
  token: |g·z_j|·‖W_down^e[:, j]‖ / ‖h‖ on tokens routed to expert e, 0 elsewhere, h the whole
  block's output without biases;
* drift is per expert neuron, and every flat index has a name (layer, expert, j).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.activations import ACT2FN

from hneurons.core.arch import ARCHITECTURES, Layout, resolve
from hneurons.errors import ConfigError, UnsupportedArchitecture
from hneurons.core.hooks import CETT_EPS, capture_cett, record_cett, scale_down_weights, scale_neurons
from tests.tiny_archs import D, E, K, L, MODEL_TYPES, assert_alpha_hook_equals_weight_edit, build

# Gated routing only: Llama 4's input-weighted experts have their own hand computation
# (tests/unit/test_arch_llama4.py).
MOE = [t for t in MODEL_TYPES if ARCHITECTURES[t].is_moe and ARCHITECTURES[t].router is None]
FIRST_DENSE = {"deepseek_v2", "deepseek_v3", "deepseek_v32", "glm4_moe", "glm4_moe_lite", "ernie4_5_moe", "exaone_moe",
               "jamba"}  # layer 0 is a dense FFN
IDS = torch.tensor([[1, 7, 21, 5, 33, 9, 12, 40, 3, 60]])


def _logits(model: nn.Module, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _hand_expert(model_type: str, experts: nn.Module, cfg: object, e: int, x: torch.Tensor) -> tuple:
    """(z, W_down x z + b) of expert e for one token state x, from the raw fused parameters."""
    if model_type == "gpt_oss":  # [E, H, 2I], gate/up interleaved, biases, clamped GLU
        gu = x @ experts.gate_up_proj[e] + experts.gate_up_proj_bias[e]
        gate = gu[0::2].clamp(max=cfg.swiglu_limit)
        up = gu[1::2].clamp(min=-cfg.swiglu_limit, max=cfg.swiglu_limit)
        z = (up + 1) * gate * torch.sigmoid(gate * cfg.swiglu_alpha)
        return z, z @ experts.down_proj[e] + experts.down_proj_bias[e]
    gu = experts.gate_up_proj[e] @ x  # [2I, H]: gate half first
    gate, up = gu.chunk(2)
    z = ACT2FN[cfg.hidden_act](gate) * up
    return z, experts.down_proj[e] @ z


class _Tap:
    """Records each MoE layer's experts call, block output and shared-expert input."""

    def __init__(self, layout: Layout) -> None:
        self.calls: dict[int, dict] = {}
        self.handles = []
        for layer in range(layout.n_layers):
            ex = layout.experts_of(layer)
            if ex is None:
                continue
            rec = self.calls.setdefault(layer, {})
            self.handles.append(ex.module.register_forward_hook(
                lambda m, a, kw, o, rec=rec: rec.update(args=[t.clone() for t in [*a, *kw.values()][:3]], out=o.clone()),
                with_kwargs=True))
            self.handles.append(ex.block.register_forward_hook(
                lambda m, a, o, rec=rec: rec.update(block=(o[0] if isinstance(o, tuple) else o).clone())))
            if ex.shared is not None:
                self.handles.append(ex.shared.register_forward_pre_hook(
                    lambda m, a, rec=rec: rec.update(shared_x=a[0].reshape(-1, a[0].shape[-1]).clone())))

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _hand_shared(ex: object, cfg: object, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale s [N], z [N, S]) of the shared expert; s is Qwen2-MoE's sigmoid gate, else 1."""
    mlp = ex.shared
    z = ACT2FN[cfg.hidden_act](x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)
    s = torch.sigmoid(x @ ex.shared_scale.weight.T)[:, 0] if ex.shared_scale is not None else torch.ones(len(x), dtype=x.dtype)
    return s, z


@pytest.mark.parametrize("model_type", MOE)
def test_moe_row_matches_the_experts_module(model_type: str) -> None:
    model = build(model_type)
    assert model.config.model_type == model_type
    layout = resolve(model)
    cfg = model.config
    moe_layers = [i for i in range(L) if layout.experts_of(i) is not None]
    assert moe_layers == ([1] if model_type in FIRST_DENSE else [0, 1])
    tap = _Tap(layout)
    base = _logits(model)
    tap.close()
    for layer in moe_layers:
        ex = layout.experts_of(layer)
        assert ex.n_experts == E and layout.width(layer) == ex.n_neurons <= layout.d_ff
        assert dict(model.named_modules())[f"model.layers.{layer}.{ARCHITECTURES[model_type].experts}"] is ex.module
        rec = tap.calls[layer]
        hidden, index, gates = rec["args"]
        assert index.shape == gates.shape == (IDS.shape[1], K)
        expected = torch.zeros_like(rec["out"])
        for n in range(hidden.shape[0]):
            for k in range(K):
                e = int(index[n, k])
                z, y = _hand_expert(model_type, ex.module, cfg, e, hidden[n])
                expected[n] += gates[n, k] * y
                # hneurons' reading of the fused tensors: same z, same columns of W_down
                torch.testing.assert_close(ex.activations(hidden[n:n + 1], e)[0], z, rtol=1e-10, atol=1e-12)
                cols = layout.down_weight(layer)[:, e * ex.width:(e + 1) * ex.width]
                bias = ex.down_bias()[e] if ex.down_bias() is not None else 0
                torch.testing.assert_close(cols @ z + bias, y, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(rec["out"], expected, rtol=1e-10, atol=1e-10)
        block = rec["block"].reshape(-1, D)
        if ex.shared is None:
            torch.testing.assert_close(block, rec["out"], rtol=1e-10, atol=1e-10)
        else:
            s, zs = _hand_shared(ex, cfg, rec["shared_x"])
            ws = layout.down_weight(layer)[:, ex.n_routed:ex.n_neurons]
            torch.testing.assert_close(block, rec["out"] + s[:, None] * (zs @ ws.T), rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(layout.up_weight(layer)[ex.n_routed:], ex.shared.up_proj.weight)
            torch.testing.assert_close(layout.gate_weight(layer)[ex.n_routed:], ex.shared.gate_proj.weight)

    # α by hook equals α by weight edit: neurons in several experts, the shared expert, a dense
    # layer and (DeepSeek-like) a padding slot, which is a no-op.
    neurons = []
    for layer in range(L):
        w = layout.width(layer)
        neurons += [layer * layout.d_ff + j for j in (0, 3, w // 2, w // 2 + 1, w - 1)]
        if w < layout.d_ff:
            neurons.append(layer * layout.d_ff + w)  # padding
    assert_alpha_hook_equals_weight_edit(layout, neurons, lambda: _logits(model), base)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _hand_cett(model_type: str, model: nn.Module, layout: Layout, tap: _Tap, dense_z: dict) -> torch.Tensor:
    """Per-token CETT [L, T, d_ff] straight from the definition in docs/MOE.md."""
    t = IDS.shape[1]
    out = torch.zeros(L, t, layout.d_ff, dtype=torch.float64)
    for layer in range(L):
        ex = layout.experts_of(layer)
        if ex is None:  # dense layer of a MoE model: the paper's CETT; slots past its width stay 0
            z = dense_z[layer][0]
            w = layout.down_weight(layer)
            out[layer, :, :w.shape[1]] = z.abs() * w.norm(dim=0) / ((z @ w.T).norm(dim=-1, keepdim=True) + CETT_EPS)
            continue
        rec = tap.calls[layer]
        hidden, index, gates = rec["args"]
        h = rec["block"].reshape(-1, D).clone()
        if ex.down_bias() is not None:  # gpt-oss: h excludes the experts' output biases
            for n in range(t):
                for k in range(K):
                    h[n] -= gates[n, k] * ex.down_bias()[int(index[n, k])]
        for n in range(t):
            hn = h[n].norm() + CETT_EPS
            for k in range(K):
                e = int(index[n, k])
                z, _ = _hand_expert(model_type, ex.module, model.config, e, hidden[n])
                col_norms = layout.down_weight(layer)[:, e * ex.width:(e + 1) * ex.width].norm(dim=0)
                out[layer, n, e * ex.width:(e + 1) * ex.width] = (gates[n, k] * z).abs() * col_norms / hn
        if ex.shared is not None:
            s, zs = _hand_shared(ex, model.config, rec["shared_x"])
            ws = ex.shared.down_proj.weight
            out[layer, :, ex.n_routed:ex.n_neurons] = (s[:, None] * zs).abs() * ws.norm(dim=0) / (h.norm(dim=-1, keepdim=True) + CETT_EPS)
    return out


@pytest.mark.parametrize("model_type", ["qwen2_moe", "gpt_oss", "deepseek_v3", "mixtral", "qwen3_next",
                                        "hunyuan_v1_moe", "jamba"])
def test_moe_cett_equals_hand_computation(model_type: str) -> None:
    model = build(model_type)
    layout = resolve(model)
    t = IDS.shape[1]
    tap = _Tap(layout)
    dense_z: dict[int, torch.Tensor] = {}
    handles = [layout.down_projs[i].register_forward_hook(lambda m, a, o, i=i: dense_z.__setitem__(i, a[0].clone()))
               for i in range(L) if layout.experts_of(i) is None]
    regions = torch.cat([torch.eye(t), torch.zeros(2, t)])[None]  # one region per token + two spans
    regions[0, t, :4] = 1
    regions[0, t + 1, 4:] = 1
    flat = [1 * layout.d_ff + j for j in (0, 5, 17, 33, layout.width(1) - 1)] + [0, 2, layout.d_ff - 1]
    with torch.no_grad(), capture_cett(layout, regions) as feats, record_cett(layout, flat) as records:
        model(input_ids=IDS)
    tap.close()
    for hd in handles:
        hd.remove()
    hand = _hand_cett(model_type, model, layout, tap, dense_z)  # [L, T, d_ff]
    torch.testing.assert_close(feats[0, :, :t].double(), hand, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(feats[0, :, t].double(), hand[:, :4].mean(1), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(feats[0, :, t + 1].double(), hand[:, 4:].mean(1), rtol=1e-5, atol=1e-7)
    rec = records[0][0].double()  # [T, len(flat)]
    torch.testing.assert_close(rec, hand.permute(1, 0, 2).reshape(t, -1)[:, flat], rtol=1e-5, atol=1e-7)
    for layer in range(L):
        ex = layout.experts_of(layer)
        if ex is None:
            continue
        # a neuron's CETT is 0 on tokens not routed to its expert, and Σ_j CETT ≥ 1 (triangle inequality)
        index = tap.calls[layer]["args"][1]
        skipped = [~(index == e).any(-1) for e in range(E)]
        assert sum(int(u.sum()) for u in skipped) == t * (E - K)  # every token skips E − K experts
        for e, unrouted in enumerate(skipped):
            assert (feats[0, layer, :t][unrouted][:, e * ex.width:(e + 1) * ex.width] == 0).all()
        assert (feats[0, layer, :t].sum(-1) >= 1 - 1e-5).all()


@pytest.mark.parametrize("model_type", ["mixtral", "qwen2_moe", "llama4_text"])
def test_moe_alpha_in_generation_with_kv_cache(model_type: str) -> None:
    model = build(model_type)
    layout = resolve(model)
    neurons = [j for layer in range(L) for j in range(layer * layout.d_ff, layer * layout.d_ff + layout.width(layer), 3)]

    def generate() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            out = model.generate(IDS[:, :4], max_new_tokens=6, do_sample=False, output_scores=True,
                                 return_dict_in_generate=True, pad_token_id=0)
        return out.sequences, torch.stack(out.scores)

    _, scores0 = generate()
    with scale_neurons(layout, neurons, 3.0):
        seq_h, scores_h = generate()
    with scale_down_weights(layout, neurons, 3.0):
        seq_w, scores_w = generate()
    assert torch.equal(seq_h, seq_w) and not torch.allclose(scores_h, scores0, atol=1e-6)
    torch.testing.assert_close(scores_h, scores_w, rtol=1e-9, atol=1e-9)


def test_moe_hooks_with_default_float32_kernels() -> None:
    """The production path: float32 and transformers' default (grouped-mm) experts kernel."""
    model = build("mixtral", dtype=torch.float32, experts="grouped_mm")
    layout = resolve(model)
    neurons = list(range(0, layout.n_neurons, 7))
    with scale_neurons(layout, neurons, 0.0):
        hooked = _logits(model)
    with scale_down_weights(layout, neurons, 0.0):
        edited = _logits(model)
    torch.testing.assert_close(hooked, edited, rtol=1e-4, atol=1e-4)
    with torch.no_grad(), capture_cett(layout, torch.ones(1, 1, IDS.shape[1])) as feats:
        model(input_ids=IDS)
    assert torch.isfinite(feats).all() and (feats > 0).any()


def test_neuron_names_cover_experts_shared_dense_and_padding() -> None:
    layout = resolve(build("qwen2_moe"))
    ex = layout.experts_of(1)
    assert layout.neuron(layout.d_ff + 2 * ex.width + 5) == (1, 2, 5)
    assert layout.neuron_name(layout.d_ff + 2 * ex.width + 5) == "L1.E2.N5"
    assert layout.neuron_name(ex.n_routed + 3) == "L0.shared.N3"
    ds = resolve(build("deepseek_v3"))
    assert ds.neuron_name(7) == "L0.N7" and ds.width(0) < ds.d_ff
    with pytest.raises(ConfigError, match="padding"):
        ds.neuron(ds.width(0))
    with pytest.raises(ConfigError, match="out of range"):
        ds.neuron(ds.n_neurons)
    info = ds.describe()
    assert (info["n_experts"], info["expert_width"], info["moe_layers"]) == (E, ds.experts_of(1).width, 1)


@pytest.mark.parametrize("model_type", ["qwen2_moe", "gpt_oss", "deepseek_v3", "llama4_text"])
def test_drift_is_per_expert_neuron(model_type: str) -> None:
    from hneurons.origin.drift import neuron_drift

    a, b = build(model_type), build(model_type)
    la, lb = resolve(a), resolve(b)
    ex = lb.experts_of(1)
    e, j = 2, 5
    with torch.no_grad():  # turn one expert neuron's input row and one output column of expert 1
        ex.up(e)[j] += 1.0
        ex.down(1)[:, 4] *= -1.0
    d = neuron_drift(la, lb)
    up_hit = 1 * la.d_ff + e * ex.width + j
    down_hit = 1 * la.d_ff + 1 * ex.width + 4
    assert set(torch.nonzero(torch.as_tensor(d.drift_up) > 1e-9).flatten().tolist()) == {up_hit}
    assert set(torch.nonzero(torch.as_tensor(d.drift_down) > 1e-9).flatten().tolist()) == {down_hit}
    assert abs(d.drift_down[down_hit] - 2.0) < 1e-9  # a flipped column: 1 − cos = 2


def test_drift_from_files_refuses_moe(tmp_path) -> None:
    from hneurons.origin.weights import SafetensorsWeights

    (tmp_path / "config.json").write_text('{"model_type": "mixtral"}')
    with pytest.raises(Exception, match="mixture-of-experts"):
        SafetensorsWeights(tmp_path)


def test_moe_row_without_fused_experts_is_rejected() -> None:
    model = build("mixtral")
    model.model.layers[0].mlp.experts.down_proj = nn.Parameter(torch.zeros(4, 4, dtype=torch.float64))
    with pytest.raises(UnsupportedArchitecture, match="not a fused experts module"):
        resolve(model)
