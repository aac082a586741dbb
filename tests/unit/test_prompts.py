"""The one prompt renderer: the user turn, a conversation, a prompt with its response."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import bpe_tokenizer  # noqa: E402

from hneurons.config import PAPER_SUFFIX  # noqa: E402
from hneurons.errors import ConfigError  # noqa: E402
from hneurons.text.prompts import render_conversation, render_exchange, render_prompt, user_text  # noqa: E402


def test_user_text_appends_the_suffix_once() -> None:
    assert user_text("  Who wrote Hamlet? ", PAPER_SUFFIX) == f"Who wrote Hamlet? {PAPER_SUFFIX}"
    # a question that already carries the suffix (copied from a run's records) keeps one copy
    assert user_text(f"Who wrote Hamlet? {PAPER_SUFFIX}", PAPER_SUFFIX) == f"Who wrote Hamlet? {PAPER_SUFFIX}"
    assert user_text("Who wrote Hamlet?", "") == "Who wrote Hamlet?"
    # the official collect_responses.py form for every question the pipeline sends
    q = "What is the capital of France?"
    assert user_text(q, PAPER_SUFFIX) == f"{q.strip()} {PAPER_SUFFIX}"


def test_single_turn_prompt_is_the_one_turn_conversation() -> None:
    tok = bpe_tokenizer()
    user = user_text("Who wrote Hamlet?", PAPER_SUFFIX)
    assert render_prompt(tok, user) == render_conversation(tok, [{"role": "user", "content": user}])
    assert render_prompt(tok, user) == f"<s><|user|>\n{user}</s>\n<|assistant|>\n"
    assert render_prompt(tok, "Who wrote Hamlet?", chat=False) == "Who wrote Hamlet?\nAnswer:"
    # plain multi-turn: earlier answers filled in after "Answer:"
    msgs = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]
    assert render_conversation(tok, msgs, chat=False) == "Q1\nAnswer: A1\nQ2\nAnswer:"


def test_exchange_starts_with_the_prompt_and_marks_the_response() -> None:
    tok = bpe_tokenizer()
    for chat in (True, False):
        text, start, end = render_exchange(tok, "Who wrote Hamlet?", "  William Shakespeare ", chat)
        assert text.startswith(render_prompt(tok, "Who wrote Hamlet?", chat))
        assert text[start:end] == "William Shakespeare"
    text, start, end = render_exchange(tok, "Who wrote Hamlet?", "", chat=False)
    assert (text, start, end) == ("Who wrote Hamlet?\nAnswer:", len(text), len(text))


def test_a_base_tokenizer_in_chat_format_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match='model.prompt_format = "plain"'):
        render_conversation(bpe_tokenizer(chat=False), [{"role": "user", "content": "Q"}])


def test_answer_stop_ends_plain_answers_at_the_line_and_leaves_chat_turns_to_the_template() -> None:
    from hneurons.text.prompts import answer_stop

    assert answer_stop(chat=False) == ("\n",)
    assert answer_stop(chat=True) == ()
