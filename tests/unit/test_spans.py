"""Answer-span location on byte-level BPE and SentencePiece-style tokenizers built in the test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import bpe_tokenizer, sp_tokenizer  # noqa: E402

from hneurons.errors import ConfigError  # noqa: E402
from hneurons.text.spans import (  # noqa: E402
    Span,
    SpanFailure,
    build_sequence,
    label_aware_span,
    locate_answer,
)
from hneurons.text.prompts import render_prompt  # noqa: E402

TOKENIZERS = {"bpe": bpe_tokenizer, "sp": sp_tokenizer}
Q = "Who wrote The Iceman Cometh? Respond with the answer only, without any explanation."


@pytest.fixture(params=sorted(TOKENIZERS))
def tok(request):
    return TOKENIZERS[request.param]()


def _check_span(tok, seq, span, answer_text):
    assert isinstance(span, Span), span
    assert seq.text[span.char_start : span.char_end] == span.text
    assert span.text.lower() == answer_text.lower()
    assert seq.prompt_end <= span.start < span.end <= seq.response_end
    decoded = tok.decode(seq.input_ids[span.start : span.end])
    assert answer_text.lower() in decoded.lower()
    # minimal: dropping either end token loses part of the answer
    for lo, hi in ((span.start + 1, span.end), (span.start, span.end - 1)):
        assert answer_text.lower() not in tok.decode(seq.input_ids[lo:hi]).lower()


def test_sequence_layout(tok):
    seq = build_sequence(tok, Q, "Eugene O'Neill wrote it.")
    prompt = render_prompt(tok, Q)
    assert seq.text.startswith(prompt)
    assert seq.text == prompt + "Eugene O'Neill wrote it.</s>\n"
    assert seq.text[seq.response_char_start : seq.response_char_end] == "Eugene O'Neill wrote it."
    # the prompt tokens are exactly the tokens the model is sampled from
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert seq.input_ids[: seq.prompt_end] == prompt_ids
    # the response tokens decode to the response; what follows is template only
    assert tok.decode(seq.input_ids[seq.prompt_end : seq.response_end]).strip() == (
        "Eugene O'Neill wrote it."
    )
    assert seq.input_ids[seq.response_end] == tok.eos_token_id
    assert len(seq.offsets) == len(seq.input_ids)
    assert seq.input_ids.count(tok.bos_token_id) == 1  # no doubled BOS


@pytest.mark.parametrize(
    ("response", "answer", "expected"),
    [
        ("Eugene O'Neill wrote it.", "O'Neill", "O'Neill"),  # apostrophe
        ("Eugene O'Neill wrote it.", "Eugene O'Neill", "Eugene O'Neill"),  # multi-token name
        ("It was written by Eugene O'Neill.", "Eugene O'Neill", "Eugene O'Neill"),  # end + period
        ("The capital of France is Paris.", " Paris", "Paris"),  # leading space in the answer
        ("the answer is paris!", "Paris", "paris"),  # case-insensitive fallback
        ("Rome is the capital of Italy.", "Rome", "Rome"),  # first response token
        ("William Shakespeare", "William Shakespeare", "William Shakespeare"),  # whole response
    ],
)
def test_locate_answer(tok, response, answer, expected):
    seq = build_sequence(tok, Q, response)
    span = locate_answer(seq, answer)
    _check_span(tok, seq, span, expected)


def test_case_sensitive_match_preferred(tok):
    seq = build_sequence(tok, Q, "paris, or rather Paris.")
    span = locate_answer(seq, "Paris")
    assert isinstance(span, Span)
    assert span.char_start == seq.response_char_start + len("paris, or rather ")
    span = locate_answer(seq, "PARIS")  # no exact match: first case-insensitive one
    assert span.char_start == seq.response_char_start


def test_answer_only_in_prompt_is_not_found(tok):
    # "Iceman" occurs in the question but not in the response: the span must not land in the prompt
    seq = build_sequence(tok, Q, "Eugene O'Neill wrote it.")
    out = locate_answer(seq, "Iceman")
    assert isinstance(out, SpanFailure)
    assert "not found" in out.reason and "Iceman" in out.reason


@pytest.mark.parametrize(("response", "answer"), [("Paris.", ""), ("", "Paris")])
def test_failures_have_reasons(tok, response, answer):
    out = locate_answer(build_sequence(tok, Q, response), answer)
    assert isinstance(out, SpanFailure) and out.reason


def test_normalised_fallback_for_judged_alias(tok):
    # the rule judge matches normalised aliases: "spirit of ecstasy" vs "the Spirit-of-Ecstasy"
    seq = build_sequence(tok, Q, "It is the Spirit-of-Ecstasy, of course.")
    assert isinstance(locate_answer(seq, "spirit of ecstasy"), SpanFailure)
    span = label_aware_span(seq, "spirit of ecstasy")
    assert isinstance(span, Span)
    assert span.text == "Spirit-of-Ecstasy"


def test_label_aware_span_wrong_response_trims_fillers(tok):
    seq = build_sequence(tok, Q, "  William Shakespeare wrote it!  ")
    span = label_aware_span(seq, None)
    assert isinstance(span, Span)
    assert span.text == "William Shakespeare wrote it"
    assert tok.decode(seq.input_ids[span.start : span.end]).strip() == span.text
    assert span.end <= seq.response_end  # "!" and template tokens excluded
    assert "!" not in tok.decode(seq.input_ids[span.start : span.end])
    assert isinstance(label_aware_span(build_sequence(tok, Q, "?!"), None), SpanFailure)
    assert isinstance(label_aware_span(build_sequence(tok, Q, ""), None), SpanFailure)


def test_plain_format(tok):
    seq = build_sequence(tok, "Who wrote Hamlet?", "William Shakespeare", chat=False)
    assert seq.text == "Who wrote Hamlet?\nAnswer: William Shakespeare"
    assert seq.text.startswith(render_prompt(tok, "Who wrote Hamlet?", chat=False))
    span = locate_answer(seq, "Shakespeare")
    _check_span(tok, seq, span, "Shakespeare")


def test_missing_chat_template_is_a_config_error():
    base = bpe_tokenizer(chat=False)
    with pytest.raises(ConfigError, match='set model.prompt_format = "plain"'):
        build_sequence(base, Q, "Paris")
    with pytest.raises(ConfigError, match="plain"):
        render_prompt(base, Q)
    # the plain format works without a template
    assert build_sequence(base, Q, "Paris", chat=False).text.endswith("Answer: Paris")


def test_template_that_is_not_a_prefix():
    # a template whose generation prompt differs from a finished assistant turn
    tok = bpe_tokenizer()
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n\n{% endif %}"
    )
    seq = build_sequence(tok, Q, "Eugene O'Neill")
    assert not seq.text.startswith(render_prompt(tok, Q))
    assert seq.text[seq.response_char_start : seq.response_char_end] == "Eugene O'Neill"
    _check_span(tok, seq, locate_answer(seq, "O'Neill"), "O'Neill")
