"""The ``llm`` span method: the paper's answer extraction through an OpenAI-compatible server.

The paper (arXiv 2512.01797) §2.7 asks GPT-4o for the answer tokens. Here the model is asked for a
verbatim substring in a JSON object, the reply is validated against the response, re-asked when
invalid, cached, and the ``phrase`` rule is the recorded fallback.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

class LLMSpanLocator:
    """The paper's answer extraction through an OpenAI-compatible chat endpoint (the paper (arXiv 2512.01797) §2.7).

    Asks for the answer as a verbatim substring of the response in a JSON object (double quotes:
    no apostrophe bug), validates that it occurs contiguously in the response, re-asks on empty or
    invalid replies, and falls back to the ``phrase`` rule after ``max_attempts``; ``fallbacks``
    counts those. Replies are cached through :class:`hneurons.llm_client.ChatClient`'s reply cache.
    """

    PROMPT = (
        "Question: {question}\nResponse: {response}\n\n"
        "Copy the answer to the question from the response: the shortest contiguous piece of the "
        "response that states the factual claim (an entity, a number, a date, a short phrase), "
        "without lead-ins, the question's own words or explanations. Copy it character for "
        'character. Reply with JSON only: {{"answer": "<verbatim substring>"}}'
    )

    def __init__(self, base_url: str, model: str, cache_dir: Path | None = None, max_attempts: int = 3,
                 **client_kwargs: Any) -> None:
        from hneurons.llm_client import ChatClient

        self._client = ChatClient(base_url, model, "LLM requests (the questions and responses are sent)",
                                  cache_dir=cache_dir, **client_kwargs)
        self.max_attempts = max(1, max_attempts)
        self.fallbacks = 0

    def close(self) -> None:
        """Close the HTTP client and its cache."""
        self._client.close()

    def __call__(self, question: str, response: str) -> tuple[int, int] | None:
        prompt = self.PROMPT.format(question=question.strip(), response=response)
        key = hashlib.sha256(("span\0" + prompt).encode("utf-8")).hexdigest()
        for attempt in range(self.max_attempts):
            reply = self._client.cached(key) if attempt == 0 else None
            fresh = reply is None
            if fresh:
                reply = self._client.complete(prompt)
            got = _parse_llm_span(reply or "", response)
            if got is not None:
                if fresh:
                    self._client.remember(key, reply or "")
                return got
        self.fallbacks += 1
        from hneurons.text.locator import answer_phrase

        return answer_phrase(question, response)


def _parse_llm_span(reply: str, response: str) -> tuple[int, int] | None:
    """The reply's ``answer`` located in ``response``; None when absent, empty or not a substring."""
    m = re.search(r"\{.*\}", reply, re.DOTALL)
    try:
        answer = json.loads(m.group(0))["answer"] if m else None
    except (ValueError, KeyError, TypeError):
        answer = None
    if not isinstance(answer, str) or not answer.strip():
        return None
    needle = answer.strip()
    at = response.find(needle)
    if at < 0:
        at = response.lower().find(needle.lower())
    return (at, at + len(needle)) if at >= 0 else None


def make_llm_locator(spans_cfg: Any, cache_dir: Path | None) -> LLMSpanLocator | None:
    """The LLM locator a run's ``spans`` config asks for (None for the rule methods)."""
    if spans_cfg.method != "llm":
        return None
    return LLMSpanLocator(spans_cfg.llm_url, spans_cfg.llm_model, cache_dir=cache_dir)
