"""Answer spans as token positions, found through the tokenizer's character offsets.

The official H-Neurons code (``get_region_indices``) locates the answer by matching *decoded token
strings* against the full chat sequence, which silently loses samples whenever tokenisation
depends on context (leading spaces, merges across a boundary, ``Ġ``/``▁`` conventions, apostrophes).
Here every position comes from ``return_offsets_mapping=True``: the answer is found as a character
range in the rendered text and the tokens are those whose character span overlaps it. Nothing is
ever decoded and string-compared, and every miss comes back as a :class:`SpanFailure` with a reason
so callers can count and log it instead of dropping the sample.

The text comes from :mod:`hneurons.text.prompts` (:func:`~hneurons.text.prompts.render_prompt` for
sampling, :func:`~hneurons.text.prompts.render_exchange` for the feature pass in
:func:`build_sequence`), so the model sees identical prompt tokens in both.
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from typing import Any

from hneurons.errors import ConfigError
from hneurons.text.prompts import render_exchange

# Characters the SQuAD-style judge normalisation (the official rule_judge) turns into spaces.
_JUDGE_PUNCT = set(string.punctuation + "‘’´`")
_ARTICLES = {"a", "an", "the"}


@dataclass(frozen=True)
class Sequence:
    """A rendered prompt + response, tokenised with character offsets.

    ``prompt_end``/``response_end`` are token indices (``[prompt_end, response_end)`` are the
    response tokens, template tokens after the response excluded); the ``response_char_*`` fields
    are the response's character range in ``text``.
    """

    text: str
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    prompt_end: int
    response_end: int
    response_char_start: int
    response_char_end: int


@dataclass(frozen=True)
class Span:
    """Answer tokens ``[start, end)`` in the full sequence, and the characters they stand for."""

    start: int
    end: int
    char_start: int
    char_end: int
    text: str


@dataclass(frozen=True)
class SpanFailure:
    """Why no span could be located (kept and counted, never silently dropped)."""

    reason: str


def add_special_tokens_for(tokenizer: Any, text: str) -> bool:
    """Whether tokenising ``text`` should let the tokenizer add its special tokens.

    Chat templates usually write the BOS token themselves (SmolLM2, Llama-3, Gemma, Mistral);
    adding it again would double it. Plain prompts carry no BOS, so the tokenizer adds it when its
    configuration says so (e.g. Gemma base models need it; SmolLM2 has ``add_bos_token`` false).
    """
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and text.startswith(bos))


def build_sequence(tokenizer: Any, user: str, response: str, chat: bool = True) -> Sequence:
    """Render ``[user, assistant=response]`` and tokenise it with offsets.

    The response is stripped (as stored after sampling). Token indices of the
    response are derived from character offsets, so a token straddling the prompt/response
    boundary counts as a response token and template tokens after the response do not.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer; answer spans need "
            "offset mappings: load it with use_fast=True (a tokenizer.json)"
        )
    text, rc_start, rc_end = render_exchange(tokenizer, user, response, chat)
    enc = tokenizer(
        text,
        add_special_tokens=add_special_tokens_for(tokenizer, text),
        return_offsets_mapping=True,
    )
    ids = list(enc["input_ids"])
    offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    prompt_end = next(
        (i for i, (a, b) in enumerate(offsets) if a < b and b > rc_start), len(ids)
    )
    response_end = prompt_end
    for i in range(prompt_end, len(ids)):
        a, b = offsets[i]
        if a < b and a < rc_end:
            response_end = i + 1
    return Sequence(text, ids, offsets, prompt_end, response_end, rc_start, rc_end)


def _tokens_covering(seq: Sequence, cs: int, ce: int) -> tuple[int, int] | None:
    hits = [
        i
        for i in range(seq.prompt_end, seq.response_end)
        if seq.offsets[i][0] < seq.offsets[i][1]
        and seq.offsets[i][0] < ce
        and seq.offsets[i][1] > cs
    ]
    return (hits[0], hits[-1] + 1) if hits else None


def _normalised_with_map(text: str) -> tuple[str, list[int]]:
    """The judge's SQuAD normalisation of ``text`` plus, per output character, its source index."""
    chars: list[tuple[str, int]] = []
    for i, ch in enumerate(text):
        low = ch.lower()
        if len(low) != 1:  # e.g. "İ" lower-cases to two characters; keep the position map simple
            low = ch
        chars.append((" " if low == "_" or low in _JUDGE_PUNCT else low, i))
    words: list[list[tuple[str, int]]] = []
    current: list[tuple[str, int]] = []
    for ch, i in chars:
        if ch.isspace():
            if current:
                words.append(current)
                current = []
        else:
            current.append((ch, i))
    if current:
        words.append(current)
    words = [w for w in words if "".join(c for c, _ in w) not in _ARTICLES]
    out: list[str] = []
    index: list[int] = []
    for k, w in enumerate(words):
        if k:
            out.append(" ")
            index.append(w[0][1])
        out.extend(c for c, _ in w)
        index.extend(i for _, i in w)
    return "".join(out), index


def span_from_chars(seq: Sequence, cs: int, ce: int) -> Span | SpanFailure:
    """The response tokens overlapping characters ``[cs, ce)`` of ``seq.text``.

    The span's text starts at its first non-space character (a byte-level token's offsets may
    include its leading space).
    """
    tokens = _tokens_covering(seq, cs, ce)
    if tokens is None:
        return SpanFailure(f"no response token overlaps characters {cs}..{ce}")
    while cs < ce and seq.text[cs].isspace():
        cs += 1
    return Span(tokens[0], tokens[1], cs, ce, seq.text[cs:ce])


def locate_answer(seq: Sequence, answer: str, normalised: bool = False) -> Span | SpanFailure:
    """Find a given string ``answer`` inside the response and return the tokens that overlap it.

    Order: case-sensitive first occurrence, then case-insensitive. With ``normalised=True`` a
    third attempt matches under the judge's normalisation (lower case, punctuation and articles
    removed). Used for explicit spans (``score``'s ``span`` field, NonExist refusal phrases under
    the alias rule); answer spans of training and evaluation come from the label-blind
    :func:`hneurons.text.locator.locate_answer_span`.
    """
    needle = answer.strip()
    if not needle:
        return SpanFailure("empty answer string")
    rs, re_ = seq.response_char_start, seq.response_char_end
    if rs >= re_:
        return SpanFailure("empty response")
    response = seq.text[rs:re_]
    cs = ce = -1
    for flags in (0, re.IGNORECASE):
        m = re.search(re.escape(needle), response, flags)
        if m:
            cs, ce = rs + m.start(), rs + m.end()
            break
    if cs < 0 and normalised:
        norm_resp, index = _normalised_with_map(response)
        norm_ans, _ = _normalised_with_map(needle)
        at = norm_resp.find(norm_ans) if norm_ans else -1
        if at >= 0:
            cs, ce = rs + index[at], rs + index[at + len(norm_ans) - 1] + 1
    if cs < 0:
        return SpanFailure(f"answer {needle[:60]!r} not found in the response")
    got = span_from_chars(seq, cs, ce)
    if isinstance(got, SpanFailure):
        return SpanFailure(f"no response token overlaps the answer {needle[:60]!r}")
    return Span(got.start, got.end, cs, ce, seq.text[cs:ce])


def _is_filler(piece: str) -> bool:
    """Whitespace/punctuation-only token text (trimmed from whole-response spans)."""
    return all(ch.isspace() or unicodedata.category(ch)[0] in "PZS" for ch in piece)


def label_aware_span(seq: Sequence, matched_alias: str | None) -> Span | SpanFailure:
    """The first releases' span rule — **leaks the label**; only for ``spans.method = "alias"``.

    Correct responses: the alias the judge matched; wrong responses: the whole response minus
    filler. Span length then separates the classes by itself (AUROC 1.0 on the embedded model's
    runs), so detection numbers under this rule measure the span rule, not the neurons. Kept for
    parity experiments with the official code; the report warns when it is used.
    """
    if matched_alias is not None:
        return locate_answer(seq, matched_alias, normalised=True)
    return whole_response_span(seq)


def whole_response_span(seq: Sequence) -> Span | SpanFailure:
    """The whole response minus leading/trailing whitespace- or punctuation-only tokens."""
    if seq.response_char_start >= seq.response_char_end:
        return SpanFailure("empty response")
    keep = [
        i
        for i in range(seq.prompt_end, seq.response_end)
        if seq.offsets[i][0] < seq.offsets[i][1]
        and not _is_filler(seq.text[seq.offsets[i][0] : seq.offsets[i][1]])
    ]
    if not keep:
        return SpanFailure("response has only whitespace/punctuation tokens")
    start, end = keep[0], keep[-1] + 1
    cs = max(seq.offsets[start][0], seq.response_char_start)
    ce = min(seq.offsets[end - 1][1], seq.response_char_end)
    while cs < ce and seq.text[cs].isspace():
        cs += 1
    return Span(start, end, cs, ce, seq.text[cs:ce])
