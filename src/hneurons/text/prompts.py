"""Every prompt the pipeline sends: the paper's user turn and conversations as rendered text.

One place decides how a question becomes the text a model continues, so sampling, feature
extraction, scoring and the intervention benchmarks all see the same tokens.
"""

from __future__ import annotations

from typing import Any

from hneurons.errors import ConfigError

Message = dict[str, str]
Conversation = list[Message]
"""Chat messages (``role``, ``content``) ending with a user turn."""


def user_text(question: str, suffix: str) -> str:
    """The user turn of the paper's prompt: the stripped question, a space, the suffix."""
    return f"{question.strip()} {suffix}".strip()


def render_conversation(tokenizer: Any, messages: Conversation, chat: bool = True) -> str:
    """A conversation ending with a user turn, as the prompt text to continue.

    ``chat``: the tokenizer's chat template with the generation prompt. Plain (base models):
    ``"{user}\\nAnswer:"`` per turn, earlier answers filled in (PAPER.md §8.26).
    """
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            raise ConfigError(f"model {name} has no chat template (a base model?); set model.prompt_format = \"plain\"")
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    parts = []
    for m in messages:
        parts.append(f"{m['content']}\nAnswer:" if m["role"] == "user" else f" {m['content']}\n")
    return "".join(parts)
