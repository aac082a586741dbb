"""Every row of the adapter table against a tiny random model of that architecture.

For each ``model_type`` a 2-layer model is built from its config class (no downloads), resolved,
and run once with hooks: the module the table points at must be the one whose input is the
activation z and whose output h satisfies ``h = z @ down_weight(l).T (+ bias)``, and z itself must
equal the FFN recomputed by hand from the captured MLP input with the config's activation and
``up_weight``/``gate_weight``. A wrong path, a transposed weight, a swapped gate/up half or the
wrong activation all fail here.

Biases: GPT-2 (Conv1D), Phi and GPT-NeoX have FFN biases; the module output includes the
down-projection bias, so the check adds it. CETT's h excludes it (``hooks.down_output``, the paper's
h_t = W_down·z_t; see tests/unit/test_features.py), which this file checks separately.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3Config,
    Gemma3ForCausalLM,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    GraniteConfig,
    GraniteForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    OlmoConfig,
    OlmoForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    SmolLM3Config,
    SmolLM3ForCausalLM,
)
from transformers.activations import ACT2FN

from hneurons.arch import ARCHITECTURES, arch_for, resolve, supported_architectures, text_config
from hneurons.errors import UnsupportedArchitecture
from hneurons.hooks import CETT_EPS, capture_cett, down_output

D, F, V, L = 32, 48, 64, 2  # d_model, d_ff (≠ 4·D so a wrong default is caught), vocab, layers
COMMON = dict(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L, num_attention_heads=4,
              max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
GQA = dict(COMMON, num_key_value_heads=2)
GEMMA = dict(GQA, head_dim=8)
# Gemma 2/3 read ``hidden_activation``; giving ``hidden_act`` another value makes a hand
# computation with the wrong attribute fail (PAPER.md §8.14: Gemma-3 is GELU-tanh, not SiLU).
GEMMA_ACTS = dict(hidden_act="silu", hidden_activation="gelu_pytorch_tanh")


def _gemma3_multimodal() -> nn.Module:
    vision = dict(hidden_size=16, intermediate_size=F, num_hidden_layers=2, num_attention_heads=2,
                  image_size=28, patch_size=14)  # same d_ff as the text FFN: only the path can tell them apart
    cfg = Gemma3Config(text_config=dict(GEMMA, **GEMMA_ACTS, sliding_window=16), vision_config=vision,
                       mm_tokens_per_image=4)
    return Gemma3ForConditionalGeneration(cfg)


BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "llama": lambda: LlamaForCausalLM(LlamaConfig(**GQA)),
    "mistral": lambda: MistralForCausalLM(MistralConfig(**GQA, sliding_window=16)),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**GQA)),
    "qwen3": lambda: Qwen3ForCausalLM(Qwen3Config(**GQA, head_dim=8)),
    "gemma": lambda: GemmaForCausalLM(GemmaConfig(**GEMMA, hidden_act="gelu_pytorch_tanh")),
    "gemma2": lambda: Gemma2ForCausalLM(Gemma2Config(**GEMMA, **GEMMA_ACTS, sliding_window=16)),
    "gemma3_text": lambda: Gemma3ForCausalLM(Gemma3TextConfig(**GEMMA, **GEMMA_ACTS, sliding_window=16)),
    "gemma3": _gemma3_multimodal,
    "olmo": lambda: OlmoForCausalLM(OlmoConfig(**GQA)),
    "olmo2": lambda: Olmo2ForCausalLM(Olmo2Config(**GQA)),
    "granite": lambda: GraniteForCausalLM(GraniteConfig(**GQA)),
    "smollm3": lambda: SmolLM3ForCausalLM(SmolLM3Config(**GQA)),
    "phi3": lambda: Phi3ForCausalLM(Phi3Config(**GQA)),
    "phi": lambda: PhiForCausalLM(PhiConfig(**GQA, partial_rotary_factor=0.5)),
    "gpt2": lambda: GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=D, n_inner=F, n_layer=L, n_head=4,
                                               n_positions=64, bos_token_id=1, eos_token_id=2)),
    "gpt_neox": lambda: GPTNeoXForCausalLM(GPTNeoXConfig(**COMMON, rotary_pct=0.5)),
}


def _activation_name(model_type: str, cfg: object) -> str:
    if model_type == "gpt2":
        return cfg.activation_function
    if model_type in ("gemma2", "gemma3_text", "gemma3"):
        return cfg.hidden_activation
    return cfg.hidden_act


def build(model_type: str) -> nn.Module:
    """A tiny float64 model with every parameter random (HF zero-inits biases, which would hide them)."""
    torch.manual_seed(0)
    model = BUILDERS[model_type]().double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def test_every_row_has_a_builder() -> None:
    assert sorted(BUILDERS) == sorted(ARCHITECTURES)


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_row_resolves_the_true_down_projection(model_type: str) -> None:
    model = build(model_type)
    assert model.config.model_type == model_type
    layout = resolve(model)
    cfg = text_config(model.config)
    assert (layout.n_layers, layout.d_ff, layout.d_model, layout.n_neurons) == (L, F, D, L * F)
    assert layout.describe()["n_neurons"] == L * F

    # The text decoder's MLPs, found independently of the table: the module just around each down_proj.
    mlps = [m for name, m in model.named_modules() if name.endswith(".mlp") and "vision" not in name]
    assert len(mlps) == L
    for layer, mlp in enumerate(mlps):
        assert any(layout.down_projs[layer] is m for m in mlp.children())
        assert any(layout.up_projs[layer] is m for m in mlp.children())

    captured: dict[tuple[str, int], torch.Tensor] = {}
    handles = []
    for layer in range(L):
        handles.append(layout.down_projs[layer].register_forward_hook(
            lambda mod, args, out, layer=layer: captured.update({("z", layer): args[0], ("h", layer): out})))
        handles.append(mlps[layer].register_forward_pre_hook(
            lambda mod, args, layer=layer: captured.update({("x", layer): args[0]})))
    ids = torch.tensor([[1, 7, 21, 5, 33, 9, 12, 40]])
    with torch.no_grad():
        model(input_ids=ids)
    for h in handles:
        h.remove()

    act = ACT2FN[_activation_name(model_type, cfg)]
    for layer in range(L):
        z, h, x = captured[("z", layer)], captured[("h", layer)], captured[("x", layer)]
        assert z.shape == (1, ids.shape[1], F) and h.shape == (1, ids.shape[1], D)
        w_down = layout.down_weight(layer)
        assert w_down.shape == (D, F)
        bias = layout.down_projs[layer].bias
        assert (bias is not None) == (model_type in ("gpt2", "phi", "gpt_neox"))
        expected_h = z @ w_down.T + (bias if bias is not None else 0)
        torch.testing.assert_close(h, expected_h, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(down_output(layout.down_projs[layer], h), z @ w_down.T, rtol=1e-10, atol=1e-10)

        # Recompute the FFN's activation z by hand from the MLP input.
        up = layout.up_weight(layer)
        gate = layout.gate_weight(layer)
        assert up.shape == (F, D)
        up_bias = layout.up_projs[layer].bias
        pre_up = x @ up.T + (up_bias if up_bias is not None else 0)
        if gate is None:
            assert model_type in ("phi", "gpt2", "gpt_neox")
            expected_z = act(pre_up)
        else:
            assert gate.shape == (F, D)
            expected_z = act(x @ gate.T) * pre_up
        torch.testing.assert_close(z, expected_z, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("model_type", ["gpt2", "phi", "gpt_neox"])
def test_cett_of_biased_ffn_excludes_the_bias(model_type: str) -> None:
    """h in CETT is W_down·z (PAPER.md §3.1): per-token CETT from capture_cett equals the hand value
    without the bias, so Σ_j CETT ≥ 1 holds (triangle inequality), which fails with the bias in."""
    model = build(model_type)
    layout = resolve(model)
    captured: dict[int, torch.Tensor] = {}
    handles = [layout.down_projs[i].register_forward_hook(lambda mod, args, out, i=i: captured.__setitem__(i, args[0]))
               for i in range(L)]
    ids = torch.tensor([[1, 7, 21, 5, 33, 9]])
    t = ids.shape[1]
    with torch.no_grad(), capture_cett(layout, torch.eye(t)[None]) as feats:  # one region per token
        model(input_ids=ids)
    for h in handles:
        h.remove()
    for layer in range(L):
        z = captured[layer][0]
        w = layout.down_weight(layer)
        hand = z.abs() * w.norm(dim=0) / ((z @ w.T).norm(dim=-1, keepdim=True) + CETT_EPS)
        torch.testing.assert_close(feats[0, layer].double(), hand, rtol=1e-5, atol=1e-7)
        assert (feats[0, layer].sum(-1) >= 1 - 1e-5).all()


def test_gemma3_multimodal_never_picks_the_vision_tower() -> None:
    model = build("gemma3")
    layout = resolve(model)
    vision_ids = {id(m) for name, m in model.named_modules() if "vision" in name}
    vision_fc2 = [m for name, m in model.named_modules() if "vision" in name and name.endswith("mlp.fc2")]
    assert len(vision_fc2) >= 2  # the tower has FFNs of the same width that a name search would find
    assert not {id(m) for m in layout.down_projs + layout.up_projs + (layout.gate_projs or [])} & vision_ids
    text_layers = model.model.language_model.layers
    assert [id(m) for m in layout.down_projs] == [id(layer.mlp.down_proj) for layer in text_layers]


def test_gpt2_default_inner_size_is_four_times_hidden() -> None:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=D, n_layer=L, n_head=4, n_positions=64))
    layout = resolve(model)
    assert layout.d_ff == 4 * D
    assert layout.down_weight(0).shape == (D, 4 * D)
    assert layout.up_weight(1).shape == (4 * D, D)


def test_phi3_fused_halves() -> None:
    model = build("phi3")
    layout = resolve(model)
    fused = layout.up_projs[0].weight
    assert torch.equal(layout.gate_weight(0), fused[:F]) and torch.equal(layout.up_weight(0), fused[F:])


def test_unsupported_type_lists_supported_ones() -> None:
    class Fake(nn.Module):
        config = type("Cfg", (), {"model_type": "opt"})()

    with pytest.raises(UnsupportedArchitecture) as exc:
        resolve(Fake())
    msg = str(exc.value)
    assert "\n" not in msg and "'opt'" in msg
    for name, _ in supported_architectures():
        assert name in msg
    with pytest.raises(UnsupportedArchitecture):
        arch_for("")


def test_row_that_does_not_match_the_model_is_rejected() -> None:
    model = build("gpt2")
    model.config.model_type = "llama"  # llama's paths do not exist in a GPT-2 module tree
    with pytest.raises(UnsupportedArchitecture, match="none of the layer paths"):
        resolve(model)
    model = build("llama")
    model.config.num_hidden_layers = 3
    with pytest.raises(UnsupportedArchitecture, match="config says 3"):
        resolve(model)
