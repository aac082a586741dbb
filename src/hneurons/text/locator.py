"""The label-blind answer-span locator: which tokens of a response are "the answer".

The CETT answer feature averages over the answer tokens, so the rule that picks them must be the
same for a faithful and a hallucinated response. A rule that looks at the gold aliases or the
judge's verdict (a correct answer averaged over its matched alias, a wrong one over the whole
sentence) makes span *length* a perfect label predictor, and every downstream number — detection
AUROC, the chosen C, the H-Neuron set — then measures the span rule instead of the neurons.

So every caller that needs an answer span (responses, detect incl. NonExist, origin, ``score``,
guarded generation, the server) calls :func:`answer_chars` / :func:`locate_answer_span`, whose
inputs are only the question and the response text. Methods (``spans.method`` in the config):

* ``phrase`` (default, :mod:`hneurons.text.phrase`): the answer phrase found from the text alone,
  steered by what the question asks for (a number, a name, a place) — first line, first sentence,
  explanation after the answer clause dropped, lead-ins ("The answer is", "I think", "It was")
  dropped, a copula sentence reduced to the side that does not echo the question ("The capital of
  France is Paris" → "Paris", "Paris is the capital of France" → "Paris"), then edge function
  words, question-echo words, articles and punctuation trimmed, at most six words. Nothing left →
  the start of the whole response minus filler.
* ``response``: the whole response minus leading/trailing whitespace/punctuation (the simplest
  label-blind rule).
* ``llm``: the paper's GPT-4o extraction (the paper (arXiv 2512.01797) §2.7) through any OpenAI-compatible endpoint,
  asking for a verbatim substring (no token lists: pitfalls 3 and 5), checking it is one
  contiguous piece of the response (pitfall 4) and re-asking on an empty or invalid reply
  (pitfall 6); replies are cached; after the retries the ``phrase`` rule is the recorded fallback.

The label-aware rule of the first releases stays available only as ``spans.method = "alias"``
(see :func:`hneurons.text.spans.label_aware_span`) for parity experiments; the report flags it.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import Any

from hneurons.errors import ConfigError
from hneurons.text.phrase import MAX_DIGITS, MAX_PHRASE_WORDS, answer_phrase, response_chars
from hneurons.text.spans import Sequence, Span, SpanFailure, span_from_chars

__all__ = [
    "SPAN_METHODS",
    "LLMSpanLocator",
    "MAX_DIGITS",
    "MAX_PHRASE_WORDS",
    "answer_chars",
    "answer_phrase",
    "locate_answer_span",
    "response_chars",
    "token_char_offsets",
]

SPAN_METHODS = ("phrase", "response", "llm", "alias")
"""``alias`` is the label-aware rule kept for parity experiments only (it leaks the label)."""


def answer_chars(question: str, response: str, method: str = "phrase",
                 llm: LLMSpanLocator | None = None) -> tuple[int, int] | None:
    """The answer's character range in ``response`` by a label-blind ``method``."""
    if method == "phrase":
        return answer_phrase(question, response)
    if method == "response":
        return response_chars(response)
    if method == "llm":
        if llm is None:
            raise ConfigError('spans.method = "llm" needs spans.llm_url and spans.llm_model (an OpenAI-compatible server)')
        return llm(question, response)
    raise ConfigError(f"spans.method must be one of phrase, response, llm (alias is label-aware), got {method!r}")


def locate_answer_span(seq: Sequence, question: str, method: str = "phrase",
                       llm: LLMSpanLocator | None = None) -> Span | SpanFailure:
    """Answer tokens of the response in ``seq``, chosen without any label, alias or verdict.

    ``question`` is the bare question (without the answer-only suffix), used to recognise words
    that merely echo it.
    """
    rs, re_ = seq.response_char_start, seq.response_char_end
    if rs >= re_:
        return SpanFailure("empty response")
    got = answer_chars(question, seq.text[rs:re_], method, llm)
    if got is None:
        return SpanFailure("response has only whitespace/punctuation tokens")
    return span_from_chars(seq, rs + got[0], rs + got[1])


def token_char_offsets(tokenizer: Any, ids: Seq[int]) -> tuple[str, list[tuple[int, int]]]:
    """Decoded text of generated ``ids`` and each token's character range in it.

    Guarded generation has token ids, not a rendered sequence; decoding growing prefixes gives
    every token's characters so the same character-level locator picks the same tokens as
    :func:`locate_answer_span` does on the re-rendered text.
    """
    offsets: list[tuple[int, int]] = []
    prev = 0
    text = ""
    for k in range(len(ids)):
        text = tokenizer.decode(list(ids[: k + 1]), skip_special_tokens=True)
        offsets.append((prev, len(text)))
        prev = len(text)
    return text, offsets


def span_by_config(seq: Sequence, question: str, method: str, llm: LLMSpanLocator | None = None,
                   leaky_alias: str | None = None) -> Span | SpanFailure:
    """The answer span the stages use: label-blind unless ``method == "alias"``.

    ``leaky_alias`` (the judge's matched alias for a correct answer, None for a wrong one) is read
    **only** by the parity rule ``alias``, which leaks the label; every other method ignores it, so
    changing the gold answers or the verdict cannot change a span (tested).
    """
    if method == "alias":
        from hneurons.text.spans import label_aware_span

        return label_aware_span(seq, leaky_alias)
    return locate_answer_span(seq, question, method, llm)


# Kept importable from here: the stages import the whole locator API from this module.
from hneurons.text.locator_llm import LLMSpanLocator, make_llm_locator  # noqa: E402
from hneurons.text.span_quality import gpt4o_agreement, span_quality  # noqa: E402
