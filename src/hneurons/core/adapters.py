"""The adapter table: one row per architecture, keyed by ``config.model_type``.

A row says where a model keeps its FFN neurons (the paper, arXiv 2512.01797, §6.1.2 Eq. 1: a neuron is one
input coordinate of a decoder layer's MLP down-projection). Adding an architecture is adding a
row here; :func:`hneurons.core.arch.resolve` turns a row plus a loaded model into a
:class:`~hneurons.core.arch.Layout`. Kept apart from the resolution so that tools that only need
the table (``hneurons archs``, ``plan``, checkpoint weight readers) do not read the layout code.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

from hneurons.errors import UnsupportedArchitecture


@dataclass(frozen=True)
class Arch:
    """One row of the adapter table.

    Attributes:
        layers: dotted attribute paths (tried in order) from the top-level model to the decoder
            layer list; several because transformers versions nest wrappers differently.
        down_proj: path inside a layer to the module whose input is z and whose output is h
            (in MoE rows: of the dense layers some MoE models keep, e.g. DeepSeek's first ones).
        up_proj: path to the input projection whose rows are the neurons' input weights.
        gate_proj: path to the gate projection (gated FFNs only).
        weight_layout: ``"out_in"`` for ``nn.Linear`` (weight [out, in]); ``"in_out"`` for GPT-2's
            ``Conv1D`` (weight stored transposed, [in, out]).
        d_ff_attr: config attribute holding the intermediate size (``None``: not checked).
        experts: MoE rows: path inside a layer to the fused experts module (``gate_up_proj``
            [E, 2I, H] and ``down_proj`` [E, H, I]); a layer without it is a dense layer.
        moe_block: MoE rows: path to the whole MoE block, whose output is CETT's h.
        shared: path to the shared-expert MLP (``gate_proj``/``up_proj``/``down_proj``), if any.
        shared_scale: path to the one-output linear whose sigmoid scales the shared expert (Qwen2-MoE).
        expert_format: ``"gate_up"`` (gate half first, ``act_fn(gate) * up``), ``"gpt_oss"``
            (transposed [E, H, 2I], interleaved gate/up, biases, clamped GLU with ``alpha``/``limit``)
            or ``"llama4"`` (transposed [E, H, 2I] with the gate half first, ``down_proj`` [E, I, H]).
        router: input-weighted MoE rows (Llama 4): path to the router, whose scores scale each
            expert's *input*; the experts module then gets [E·N, d_model] (every expert, every token,
            unrouted rows zero) and no routing arguments, so the hooks read the routes here.
        flat_tokens: the decoder layer flattens [batch, seq] into one token axis before its FFN
            (OPT), so the down-projection sees [batch·seq, d_ff]; the hooks restore the batch axis.
    """

    layers: tuple[str, ...]
    down_proj: str
    up_proj: str
    gate_proj: str | None = None
    weight_layout: Literal["out_in", "in_out"] = "out_in"
    d_ff_attr: str | None = "intermediate_size"
    experts: str | None = None
    moe_block: str | None = None
    shared: str | None = None
    shared_scale: str | None = None
    expert_format: Literal["gate_up", "gpt_oss", "llama4"] = "gate_up"
    router: str | None = None
    flat_tokens: bool = False

    @property
    def is_moe(self) -> bool:
        """Whether this row describes a mixture-of-experts family."""
        return self.experts is not None


_GATED = dict(down_proj="mlp.down_proj", up_proj="mlp.up_proj", gate_proj="mlp.gate_proj")
_FUSED = dict(down_proj="mlp.down_proj", up_proj="mlp.gate_up_proj")  # gate half first ([2·d_ff, d])
_DECODER = ("model.layers",)
_GPT = ("transformer.h",)
# Multimodal checkpoints (Gemma 3/4, Llama 4) wrap the text model; the path differs across transformers versions.
_WRAPPED = ("model.language_model.layers", "language_model.model.layers", "model.layers")
_MOE = dict(_GATED, experts="mlp.experts", moe_block="mlp", d_ff_attr=None)


def _dense(*names: str) -> dict[str, Arch]:
    """Rows for Llama-like families: ``model.layers.{i}.mlp.{gate,up,down}_proj``."""
    return {n: Arch(_DECODER, **_GATED) for n in names}


ARCHITECTURES: dict[str, Arch] = {
    **_dense("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2",
             "olmo3", "granite", "granite_swa", "smollm3", "stablelm", "cohere", "cohere2", "exaone4",
             "internlm3", "qwen3_5_text", "seed_oss", "helium", "ministral", "ministral3",
             "hunyuan_v1_dense", "ernie4_5", "diffllama", "vaultgemma", "cwm", "hyperclovax",
             "exaone", "iquestcoder", "minicpm3", "olmo_hybrid", "youtu", "flint", "doge", "gemma4_text",
             "gemma4_unified_text"),
    **{t: Arch(_WRAPPED, **_GATED) for t in ("gemma3", "gemma4", "gemma4_unified")},
    # Hybrid (Mamba / short-convolution) decoders keep a gated FFN under another name.
    "falcon_h1": Arch(_DECODER, down_proj="feed_forward.down_proj", up_proj="feed_forward.up_proj",
                      gate_proj="feed_forward.gate_proj"),
    # LFM2 shrinks intermediate_size by a multiplier when block_auto_adjust_ff_dim is set: no check.
    **{t: Arch(_DECODER, down_proj="feed_forward.w2", up_proj="feed_forward.w3", gate_proj="feed_forward.w1",
               d_ff_attr=None) for t in ("lfm2", "lfm3")},
    # Phi-3 / GLM fuse gate and up into one linear ([2·d_ff, d]); its first half is the gate.
    "phi3": Arch(_DECODER, **_FUSED),
    "glm": Arch(_DECODER, **_FUSED),
    "glm4": Arch(_DECODER, **_FUSED),
    "modernbert-decoder": Arch(_DECODER, down_proj="mlp.Wo", up_proj="mlp.Wi"),
    # Ungated two-layer FFNs.
    **{t: Arch(_DECODER, down_proj="mlp.down_proj", up_proj="mlp.up_proj")
       for t in ("nemotron", "arcee", "jais2", "apertus", "apertus1p5_text")},
    "opt": Arch(("model.decoder.layers",), down_proj="fc2", up_proj="fc1", d_ff_attr="ffn_dim", flat_tokens=True),
    "mpt": Arch(("transformer.blocks",), down_proj="ffn.down_proj", up_proj="ffn.up_proj", d_ff_attr=None),
    "nanochat": Arch(_DECODER, down_proj="mlp.fc2", up_proj="mlp.fc1"),
    "phi": Arch(_DECODER, down_proj="mlp.fc2", up_proj="mlp.fc1"),
    "starcoder2": Arch(_DECODER, down_proj="mlp.c_proj", up_proj="mlp.c_fc"),
    "persimmon": Arch(_DECODER, down_proj="mlp.dense_4h_to_h", up_proj="mlp.dense_h_to_4h"),
    "biogpt": Arch(("biogpt.layers",), down_proj="fc2", up_proj="fc1"),
    "gpt2": Arch(_GPT, down_proj="mlp.c_proj", up_proj="mlp.c_fc", weight_layout="in_out", d_ff_attr="n_inner"),
    "gpt_bigcode": Arch(_GPT, down_proj="mlp.c_proj", up_proj="mlp.c_fc", d_ff_attr="n_inner"),
    "gpt_neo": Arch(_GPT, down_proj="mlp.c_proj", up_proj="mlp.c_fc", d_ff_attr="intermediate_size"),
    "gptj": Arch(_GPT, down_proj="mlp.fc_out", up_proj="mlp.fc_in", d_ff_attr="n_inner"),
    "codegen": Arch(_GPT, down_proj="mlp.fc_out", up_proj="mlp.fc_in", d_ff_attr="n_inner"),
    "bloom": Arch(_GPT, down_proj="mlp.dense_4h_to_h", up_proj="mlp.dense_h_to_4h", d_ff_attr=None),
    "falcon": Arch(_GPT, down_proj="mlp.dense_4h_to_h", up_proj="mlp.dense_h_to_4h", d_ff_attr="ffn_hidden_size"),
    "gpt_neox": Arch(("gpt_neox.layers",), down_proj="mlp.dense_4h_to_h", up_proj="mlp.dense_h_to_4h"),
    # Mixture of experts (docs/MOE.md).
    "mixtral": Arch(_DECODER, **_MOE),
    "qwen3_moe": Arch(_DECODER, **_MOE),
    "olmoe": Arch(_DECODER, **_MOE),
    "flex_olmo": Arch(_DECODER, **_MOE),
    "minimax": Arch(_DECODER, **_MOE),
    "phimoe": Arch(_DECODER, **_MOE),
    "qwen2_moe": Arch(_DECODER, **_MOE, shared="mlp.shared_expert", shared_scale="mlp.shared_expert_gate"),
    "deepseek_v2": Arch(_DECODER, **_MOE, shared="mlp.shared_experts"),
    "deepseek_v3": Arch(_DECODER, **_MOE, shared="mlp.shared_experts"),
    "glm4_moe": Arch(_DECODER, **_MOE, shared="mlp.shared_experts"),
    "ernie4_5_moe": Arch(_DECODER, **_MOE, shared="mlp.shared_experts"),
    **{t: Arch(_DECODER, **_MOE, shared="mlp.shared_expert", shared_scale="mlp.shared_expert_gate")
       for t in ("qwen3_next", "qwen3_5_moe_text")},
    **{t: Arch(_DECODER, **_MOE, shared="mlp.shared_experts")
       for t in ("deepseek_v32", "glm4_moe_lite", "exaone_moe", "solar_open")},
    "hunyuan_v1_moe": Arch(_DECODER, **_MOE, shared="mlp.shared_mlp"),
    "minimax_m2": Arch(_DECODER, **_MOE),
    "cohere2_moe": Arch(_DECODER, **_MOE),
    "jamba": Arch(_DECODER, down_proj="feed_forward.down_proj", up_proj="feed_forward.up_proj",
                  gate_proj="feed_forward.gate_proj", experts="feed_forward.experts", moe_block="feed_forward",
                  d_ff_attr=None),
    "granitemoe": Arch(_DECODER, **dict(_MOE, experts="block_sparse_moe.experts", moe_block="block_sparse_moe")),
    "gpt_oss": Arch(_DECODER, **_MOE, expert_format="gpt_oss"),
    **{t: Arch(layers, down_proj="feed_forward.down_proj", up_proj="feed_forward.up_proj",
               gate_proj="feed_forward.gate_proj", experts="feed_forward.experts", moe_block="feed_forward",
               shared="feed_forward.shared_expert", router="feed_forward.router", expert_format="llama4",
               d_ff_attr=None)
       for t, layers in (("llama4_text", _DECODER), ("llama4", _WRAPPED))},
}


def model_type_of(config: object) -> str:
    """The adapter key of a config (``config.model_type``)."""
    return str(getattr(config, "model_type", "") or "")


def text_config(config: object) -> object:
    """The language-model part of a config (multimodal configs nest it as ``text_config``)."""
    sub = getattr(config, "text_config", None)
    return sub if sub is not None and hasattr(sub, "num_hidden_layers") else config


# Families whose FFN the table cannot describe, and why: their refusal says so instead of pointing
# at a sibling row ("llama" for bitnet) that would not fit.
KNOWN_UNSUPPORTED: dict[str, str] = {
    "bitnet": "a normalisation sits between the activation and the down-projection, and its weights are "
              "packed ternary values, so ‖W_down[:, j]‖ is not read from the module",
    **dict.fromkeys(("gemma3n", "gemma3n_text"), "its FFN sparsifies activations per layer and adds "
                    "per-layer input embeddings, which the CETT definition here does not cover"),
}


def arch_for(model_type: str) -> Arch:
    """Look up a table row; refuse a :data:`KNOWN_UNSUPPORTED` family with its reason, any other
    unknown type by naming the closest supported row (a typo or a sibling family)."""
    if model_type in KNOWN_UNSUPPORTED:
        raise UnsupportedArchitecture(
            f"model_type {model_type!r} is not supported: {KNOWN_UNSUPPORTED[model_type]} "
            "(docs/MODELS.md lists what is; `hneurons archs` shows the table)."
        )
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        close = difflib.get_close_matches(model_type, list(ARCHITECTURES), n=1, cutoff=0.0)
        hint = f"closest supported: {close[0]!r}" if close and model_type else "nothing to compare"
        raise UnsupportedArchitecture(
            f"model_type {model_type!r} is not in the adapter table ({hint}; `hneurons archs` lists all "
            f"{len(ARCHITECTURES)}); add one row to hneurons.core.arch.ARCHITECTURES to support it."
        ) from None


def supported_architectures() -> list[tuple[str, Arch]]:
    """Table rows sorted by model type, for ``hneurons archs``."""
    return sorted(ARCHITECTURES.items())
