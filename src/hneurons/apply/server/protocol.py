"""The OpenAI wire format as this server speaks it: request models, errors, replies and stream chunks.

Requests are validated by pydantic models that forbid unknown fields (a field the server would
ignore is refused, so a client never believes it was honoured). Every error, whichever layer
raises it (a route, the router's 404/405, a body that is not JSON), is answered in OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``, so the ``openai`` client raises its typed
exceptions with the server's message.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_TOKENS_CAP = 2048
MAX_N = 8
SEED_BOUND = 2**63  # seeds are 64-bit integers, as in vLLM


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[_Part] | None = None
    name: str | None = None


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class _Common(BaseModel):
    """Fields chat and completions share: how many answers, how long, how random, streamed or not."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_CAP)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int | None = Field(default=None, ge=-SEED_BOUND, lt=SEED_BOUND)
    n: int = Field(default=1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: _StreamOptions | None = None
    user: str | None = None


class ChatRequest(_Common):
    """The subset of the OpenAI chat request this server honours; anything else is refused."""

    messages: list[_Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_CAP)

    def question(self) -> str | None:
        """The last user message (its text parts joined), None when there is no non-empty one."""
        for m in reversed(self.messages):
            if m.role == "user":
                content = m.content
                if isinstance(content, list):
                    content = "".join(p.text for p in content)
                return content if content and content.strip() else None
        return None


class CompletionRequest(_Common):
    """``/v1/completions``: the prompt is the question, rendered with the run's prompt as chat is."""

    prompt: str | list[str] = Field(min_length=1)

    def questions(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


ACCEPTED = {"chat": "model, messages, max_tokens, max_completion_tokens, temperature, seed, n, stream, "
                    "stream_options, user",
            "completions": "model, prompt, max_tokens, temperature, seed, n, stream, stream_options, user"}


def error(status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """An OpenAI-shaped error reply."""
    kind = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error",
            429: "rate_limit_error", 502: "upstream_error", 503: "service_unavailable"}.get(status)
    kind = kind or ("invalid_request_error" if status < 500 else "server_error")
    return JSONResponse(status_code=status, headers=headers,
                        content={"error": {"message": message, "type": kind, "param": param, "code": None}})


def validation_message(exc: ValidationError, endpoint: str) -> tuple[str, str | None]:
    """One line naming the first bad field of a request and what is accepted."""
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ()))
    if err.get("type") == "extra_forbidden":
        return f"unknown field {loc!r}; this endpoint accepts {ACCEPTED[endpoint]}", loc
    if err.get("type") == "missing":
        return f"missing required field {loc!r}", loc
    return f"{loc}: {err.get('msg')}", loc or None


def parse_body(raw: bytes) -> dict[str, Any] | str:
    """The request's JSON object, or the message saying why it is not one.

    A 100,000-deep body (RecursionError) and an integer of more digits than Python converts
    (ValueError) are answered like any other bad JSON instead of escaping as a 500.
    """
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        return f"request body is not valid JSON ({reason}); send an OpenAI request object"
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    return body


def new_id(endpoint: str) -> str:
    return f"{'chatcmpl' if endpoint == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"


def hneurons_field(result: dict[str, Any]) -> dict[str, Any]:
    """The score and decision added to every reply (top-level ``hneurons``; per choice with n > 1)."""
    return {"p_hallucination": result["p_hallucination"], "alpha": result["alpha"],
            "abstained": result["abstained"], "top_neurons": result["top_neurons"]}


def finish_reason(result: dict[str, Any]) -> str:
    return "stop" if result["abstained"] else result["finish_reason"]


def usage(results: list[dict[str, Any]]) -> dict[str, int]:
    """Prompt tokens counted once per distinct prompt (as OpenAI does for n > 1), completions summed."""
    prompt = sum({r["question"]: r["prompt_tokens"] for r in results}.values())
    completion = sum(r["completion_tokens"] for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def reply(endpoint: str, rid: str, model: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole (non-streamed) reply; ``hneurons`` is the first choice's, each choice has its own."""
    choices = []
    for i, r in enumerate(results):
        choice: dict[str, Any] = {"index": i, "finish_reason": finish_reason(r), "logprobs": None,
                                  "hneurons": hneurons_field(r)}
        if endpoint == "chat":
            choice["message"] = {"role": "assistant", "content": r["answer"]}
        else:
            choice["text"] = r["answer"]
        choices.append(choice)
    return {"id": rid, "object": "chat.completion" if endpoint == "chat" else "text_completion",
            "created": int(time.time()), "model": model, "choices": choices, "usage": usage(results),
            "hneurons": hneurons_field(results[0])}


def chunk(endpoint: str, rid: str, model: str, index: int, text: str | None, *,
          result: dict[str, Any] | None = None, first: bool = False) -> dict[str, Any]:
    """One stream chunk: a text delta, or (``result`` given) the choice's last chunk with its score."""
    choice: dict[str, Any] = {"index": index, "finish_reason": finish_reason(result) if result else None,
                              "logprobs": None}
    if endpoint == "chat":
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        if text:
            delta["content"] = text
        choice["delta"] = delta
    else:
        choice["text"] = text or ""
    out = {"id": rid, "object": "chat.completion.chunk" if endpoint == "chat" else "text_completion",
           "created": int(time.time()), "model": model, "choices": [choice]}
    if result is not None:
        choice["hneurons"] = hneurons_field(result)
        out["hneurons"] = hneurons_field(result)
    return out


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event, as OpenAI streams them (``data: {...}`` and a blank line)."""
    body = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {body}\n\n".encode()
