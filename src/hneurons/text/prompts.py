"""Every prompt the package sends: the user turn, a conversation as text, a prompt with its response.

One module decides how a question becomes the text a model continues, so sampling, feature
extraction, scoring, guarded generation, the origin analysis and the intervention benchmarks all
see the same tokens:

* :func:`user_text` — the paper's user turn: the stripped question, a space, the suffix, unless the
  question already ends with the suffix (a question taken from a run's own records does);
* :func:`render_conversation` — chat messages ending with a user turn, as the text to continue:
  the tokenizer's chat template, or for base models the plain format ``"{user}\\nAnswer:"``
  (the paper, arXiv 2512.01797 §6.3.1);
* :func:`render_prompt` — the common case, a single user turn;
* :func:`render_exchange` — ``[user, assistant=response]`` and where the response's characters are,
  for the feature pass (:func:`hneurons.text.spans.build_sequence`) that must see the tokens the
  response was sampled from;
* :func:`answer_stop` — where an answer to such a prompt ends.
"""

from __future__ import annotations

from typing import Any

from hneurons.errors import ConfigError, DataError

Message = dict[str, str]
Conversation = list[Message]
"""Chat messages (``role``, ``content``) ending with a user turn."""


def user_text(question: str, suffix: str) -> str:
    """The user turn: the stripped question, a space, the suffix — unless the question ends with it.

    The official ``collect_responses.py`` sends ``f"{question.strip()} {suffix}"``; a question that
    already carries the suffix (one copied from a run's records, or typed by a user who read the
    paper) is not given it twice. An empty suffix leaves the stripped question.
    """
    q = question.strip()
    s = suffix.strip()
    if not s or q.endswith(s):
        return q
    return f"{q} {suffix}".strip()


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer carries a chat template (instruct models do, base models usually not)."""
    return bool(getattr(tokenizer, "chat_template", None))


def _require_chat_template(tokenizer: Any) -> None:
    if not has_chat_template(tokenizer):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ConfigError(
            f"model {name} has no chat template (a base model?); "
            'set model.prompt_format = "plain" to prompt it with "{question}\\nAnswer:"'
        )


def render_conversation(tokenizer: Any, messages: Conversation, chat: bool = True) -> str:
    """A conversation ending with a user turn, as the prompt text to continue.

    ``chat``: the tokenizer's chat template with the generation prompt. Plain (base models):
    ``"{user}\\nAnswer:"`` per user turn, earlier answers filled in as ``" {answer}\\n"``.
    """
    if chat:
        _require_chat_template(tokenizer)
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['content']}\nAnswer:" if m["role"] == "user" else f" {m['content']}\n" for m in messages)


def render_prompt(tokenizer: Any, user: str, chat: bool = True) -> str:
    """The exact prompt text a response to the user turn ``user`` is sampled from."""
    return render_conversation(tokenizer, [{"role": "user", "content": user}], chat)


def answer_stop(chat: bool) -> tuple[str, ...]:
    """The stop strings of an answer: none for a chat turn, the first newline for the plain format.

    A base model continuing ``"Answer:"`` writes its answer on that line and then goes on with
    another made-up question; the chat template ends a turn itself. Sampling, the budget's timing,
    scoring and the origin analysis all stop the same way, so their answers are the same tokens.
    """
    return () if chat else ("\n",)


def render_exchange(tokenizer: Any, user: str, response: str, chat: bool = True) -> tuple[str, int, int]:
    """``[user, assistant=response]`` as text, and the response's character range ``[start, end)`` in it.

    The response is stripped (as stored after sampling). Plain format: the model continued
    ``"Answer:"`` with ``" <answer>"``, so that boundary is re-created and the text stops at the
    response. Chat format: the template's rendering of the finished assistant turn; when it does
    not start with the generation prompt (templates that drop reasoning blocks), the response is
    searched after the user's message.
    """
    prompt = render_prompt(tokenizer, user, chat)
    body = response.strip()
    if not chat:
        text = f"{prompt} {body}" if body else prompt
        return text, len(text) - len(body), len(text)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}, {"role": "assistant", "content": body}], tokenize=False)
    if text.startswith(prompt):
        search_from = len(prompt)
    else:
        at = text.rfind(user) if user else -1
        search_from = at + len(user) if at >= 0 else 0
    if not body:
        return text, search_from, search_from
    at = text.find(body, search_from)
    if at < 0:
        raise DataError(
            "the chat template changed the assistant message so the response cannot be found in "
            f"the rendered text (response starts {body[:40]!r}); use a template that keeps "
            'message content verbatim, or prompt_format = "plain"'
        )
    return text, at, at + len(body)
