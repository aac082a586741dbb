"""Tiny tokenizers and models built inside tests (no downloads, seconds to build).

Two tokenizer families cover the offset conventions that break string matching: byte-level BPE
(GPT-2/Llama-3 style, ``Ġ`` spaces, offsets include the leading space) and SentencePiece-style
Unigram with a ``▁`` Metaspace pre-tokenizer (Llama-2/Gemma style).
"""

from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CORPUS = [
    "The Iceman Cometh was written by Eugene O'Neill in 1939.",
    "Paris is the capital of France. The capital of Italy is Rome.",
    "Who wrote Hamlet? William Shakespeare wrote it.",
    "The Spirit of Ecstasy is the ornament on a Rolls Royce radiator.",
    "Answer: the largest planet is Jupiter, not Neptune or Saturn.",
    "Respond with the answer only, without any explanation.",
    "Mount Everest is the highest mountain on Earth; K2 is second.",
    "what is the capital of france? it is paris! the answer is paris.",
]

SPECIALS = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>"]

# A ChatML-like template that writes the BOS itself (like SmolLM2 and Llama-3).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _wrap(tok: Tokenizer, template: str | None) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",  # pad = eos, as in SmolLM2
        additional_special_tokens=["<|user|>", "<|assistant|>"],
    )
    fast.chat_template = template
    return fast


@functools.cache
def _bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


@functools.cache
def _unigram() -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.UnigramTrainer(
        vocab_size=200, special_tokens=SPECIALS, unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def bpe_tokenizer(chat: bool = True) -> PreTrainedTokenizerFast:
    """Byte-level BPE tokenizer with a small chat template (or none, like a base model)."""
    return _wrap(Tokenizer.from_str(_bpe().to_str()), CHAT_TEMPLATE if chat else None)


def sp_tokenizer(chat: bool = True) -> PreTrainedTokenizerFast:
    """SentencePiece-style Unigram tokenizer with ``▁`` word markers."""
    return _wrap(Tokenizer.from_str(_unigram().to_str()), CHAT_TEMPLATE if chat else None)


def tiny_llama(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    """A random 2-layer Llama sized to ``tokenizer`` (float32, eval mode)."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(cfg).eval()
