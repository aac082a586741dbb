"""A tiny random model for every row of the adapter table, built from its config class (no downloads).

Dense models: d_model 32, d_ff 48 (≠ 4·d_model, so a wrong default is caught), 2 layers. MoE models:
4 experts of width 16, top-2 routing, 2 layers (DeepSeek/GLM/ERNIE: the first layer dense, as in the
released checkpoints, so the padded flat index of docs/MOE.md is exercised). Every parameter is
re-drawn from N(0, 0.2²) in float64: HF zero-inits biases and router corrections, which would hide
a forgotten bias or router weight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers import (AutoConfig, AutoModelForCausalLM, Gemma3Config, Gemma3ForConditionalGeneration, Llama4Config,
                          Llama4ForConditionalGeneration)

from hneurons.core.arch import Layout
from hneurons.core.hooks import scale_down_weights, scale_neurons

D, F, V, L = 32, 48, 64, 2  # d_model, d_ff, vocab, layers
E, I, K = 4, 16, 2  # experts, expert width, experts per token
COMMON = dict(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L, num_attention_heads=4,
              max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
GQA = dict(COMMON, num_key_value_heads=2, head_dim=8)
GPT = dict(vocab_size=V, n_embd=D, n_inner=F, n_layer=L, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2)
# Gemma 2/3 read ``hidden_activation``; giving ``hidden_act`` another value makes a hand
# computation with the wrong attribute fail (Gemma-3 is GELU-tanh, not SiLU).
GEMMA_ACTS = dict(hidden_act="silu", hidden_activation="gelu_pytorch_tanh")
MOE = dict(GQA, num_local_experts=E, num_experts=E, n_routed_experts=E, moe_num_experts=E, num_experts_per_tok=K,
           moe_k=K, moe_intermediate_size=I)
# Multi-head latent attention sizes (DeepSeek, MiniCPM3, Youtu).
MLA_ATTN = dict(head_dim=8, num_key_value_heads=4, q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=8,
                qk_nope_head_dim=8, v_head_dim=8)
MLA = dict(MLA_ATTN, n_group=1, topk_group=1, first_k_dense_replace=1, n_shared_experts=1)

CONFIGS: dict[str, dict] = {
    **{t: GQA for t in (
        "llama", "qwen2", "olmo", "olmo2", "olmo3", "granite", "smollm3", "phi3", "stablelm", "cohere", "cohere2",
        "exaone4", "internlm3", "qwen3", "seed_oss", "helium", "hunyuan_v1_dense", "ernie4_5",
        "diffllama", "cwm", "hyperclovax", "glm", "glm4", "nemotron", "arcee", "jais2",
        "nanochat", "persimmon", "starcoder2", "biogpt", "ministral", "ministral3",
        "exaone", "iquestcoder", "olmo_hybrid", "flint", "doge", "falcon_h1", "apertus", "apertus1p5_text")},
    **{t: dict(GQA, **MLA_ATTN) for t in ("minicpm3", "youtu")},
    **{t: dict(GQA, block_auto_adjust_ff_dim=False) for t in ("lfm2", "lfm3")},
    "modernbert-decoder": dict(GQA, hidden_activation="gelu"),
    "gemma4_text": dict(GQA, **GEMMA_ACTS, sliding_window=16),
    "gemma4_unified_text": dict(GQA, **GEMMA_ACTS, sliding_window=16),
    "opt": dict(COMMON, ffn_dim=F, word_embed_proj_dim=D),
    "mpt": dict(vocab_size=V, d_model=D, n_layers=L, n_heads=4, max_seq_len=64),  # d_ff = 4·d_model
    "qwen3_5_text": dict(GQA, layer_types=["full_attention"] * L),
    "mistral": dict(GQA, sliding_window=16),
    "granite_swa": dict(GQA, sliding_window=16),
    "gemma": dict(GQA, hidden_act="gelu_pytorch_tanh"),
    "gemma2": dict(GQA, **GEMMA_ACTS, sliding_window=16),
    "gemma3_text": dict(GQA, **GEMMA_ACTS, sliding_window=16),
    "vaultgemma": dict(GQA, **GEMMA_ACTS, sliding_window=16),
    "phi": dict(GQA, partial_rotary_factor=0.5),
    "gpt_neox": dict(COMMON, rotary_pct=0.5),
    "falcon": dict(COMMON, ffn_hidden_size=F, new_decoder_architecture=False),
    "bloom": dict(vocab_size=V, hidden_size=D, n_layer=L, n_head=4),
    "gpt2": GPT,
    "gpt_bigcode": GPT,
    "gptj": dict(GPT, rotary_dim=4),
    "codegen": dict(GPT, rotary_dim=4, n_ctx=64),
    "gpt_neo": dict(COMMON, num_layers=L, num_heads=4, attention_types=[[["global", "local"], 1]], window_size=4),
    "mixtral": MOE,
    "qwen3_moe": MOE,
    "olmoe": MOE,
    "flex_olmo": MOE,
    "minimax": dict(MOE, layer_types=["full_attention"] * L),
    "phimoe": MOE,
    "granitemoe": MOE,
    "gpt_oss": dict(MOE, layer_types=["full_attention"] * L),
    "qwen2_moe": dict(MOE, shared_expert_intermediate_size=24, decoder_sparse_step=1),
    "deepseek_v2": dict(MOE, **MLA),
    "deepseek_v3": dict(MOE, **MLA),
    "glm4_moe": dict(MOE, first_k_dense_replace=1, n_shared_experts=1, n_group=1, topk_group=1),
    "ernie4_5_moe": dict(MOE, moe_layer_start_index=1, moe_num_shared_experts=1),
    "qwen3_next": dict(MOE, shared_expert_intermediate_size=24, layer_types=["full_attention"] * L),
    "qwen3_5_moe_text": dict(MOE, shared_expert_intermediate_size=24, layer_types=["full_attention"] * L),
    "deepseek_v32": dict(MOE, **MLA),
    "glm4_moe_lite": dict(MOE, **MLA),
    "exaone_moe": dict(MOE, first_k_dense_replace=1, n_shared_experts=1),
    "solar_open": dict(MOE, n_shared_experts=1),
    "hunyuan_v1_moe": dict(MOE, num_shared_expert=1),
    "minimax_m2": MOE,
    "cohere2_moe": MOE,
    "jamba": dict(MOE, expert_layer_period=2, expert_layer_offset=1, attn_layer_period=1, attn_layer_offset=0),
    # Llama 4: experts every other layer (layer 1), dense layers intermediate_size_mlp wide
    "llama4_text": dict(MOE, intermediate_size=I, intermediate_size_mlp=F, interleave_moe_layer_step=2,
                        moe_layers=None, attention_chunk_size=64),
}


def _gemma3_multimodal() -> nn.Module:
    vision = dict(hidden_size=16, intermediate_size=F, num_hidden_layers=2, num_attention_heads=2,
                  image_size=28, patch_size=14)  # same d_ff as the text FFN: only the path can tell them apart
    cfg = Gemma3Config(text_config=dict(GQA, **GEMMA_ACTS, sliding_window=16), vision_config=vision,
                       mm_tokens_per_image=4)
    return Gemma3ForConditionalGeneration(cfg)


def _llama4_multimodal() -> nn.Module:
    """Llama 4 as released: the text model inside the image-text wrapper (AutoModelForCausalLM
    would build the text model alone)."""
    vision = dict(hidden_size=16, intermediate_size=F, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14, vision_output_dim=16, projector_input_dim=16, projector_output_dim=16)
    return Llama4ForConditionalGeneration(Llama4Config(text_config=CONFIGS["llama4_text"], vision_config=vision))


MULTIMODAL = ("gemma3", "gemma4", "gemma4_unified", "llama4")
MODEL_TYPES = sorted([*CONFIGS, *MULTIMODAL])


def build(model_type: str, dtype: torch.dtype = torch.float64, experts: str = "eager") -> nn.Module:
    """A tiny model of ``model_type`` with every parameter random, in eval mode.

    ``experts`` picks transformers' experts kernel for MoE models: the default grouped-mm kernels
    have no float64 version, so float64 tests use the eager loop.
    """
    torch.manual_seed(0)
    if model_type == "gemma3":
        model = _gemma3_multimodal()
    elif model_type == "llama4":
        model = _llama4_multimodal()
    elif model_type in MULTIMODAL:  # the text decoder inside a conditional-generation wrapper
        cfg = AutoConfig.for_model(model_type, text_config=CONFIGS[f"{model_type}_text"])
        model = AutoModelForCausalLM.from_config(cfg)
    else:
        cfg = AutoConfig.for_model(model_type, **CONFIGS[model_type])
        model = AutoModelForCausalLM.from_config(cfg, experts_implementation=experts)
    model = model.to(dtype).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def activation_name(model_type: str, cfg: object) -> str:
    """The config field that names the FFN activation (families disagree on its name)."""
    if model_type in ("gemma2", "gemma3_text", "gemma3", "vaultgemma", "gemma4_text", "gemma4_unified_text",
                      "gemma4", "gemma4_unified", "modernbert-decoder"):
        return cfg.hidden_activation
    if model_type == "falcon":
        return cfg.activation
    if model_type == "mpt":
        return "gelu"  # MptMLP: nn.GELU(approximate="none")
    if model_type in ("lfm2", "lfm3"):
        return "silu"  # hard-coded in Lfm2MLP
    if model_type == "bloom":
        return "gelu_new"  # BloomGelu: the tanh approximation, hard-coded
    for name in ("activation_function", "hidden_act"):
        if isinstance(getattr(cfg, name, None), str):
            return getattr(cfg, name)
    raise AssertionError(f"{model_type}: no activation field")


def assert_alpha_hook_equals_weight_edit(layout: Layout, neurons: Sequence[int],
                                         logits: Callable[[], torch.Tensor], base: torch.Tensor) -> None:
    """α by forward hook equals α by editing W_down, changes the output, and leaves no trace.

    ``base`` is the unmodified model's ``logits()``; α = 0 and 2.5 are checked.
    """
    for alpha in (0.0, 2.5):
        with scale_neurons(layout, neurons, alpha):
            hooked = logits()
        with scale_down_weights(layout, neurons, alpha):
            edited = logits()
        torch.testing.assert_close(hooked, edited, rtol=1e-9, atol=1e-9)
        assert not torch.allclose(hooked, base, atol=1e-6)
    assert torch.equal(logits(), base)
