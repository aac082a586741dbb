"""An OpenAI-compatible chat server that answers with guarded generation.

``POST /v1/chat/completions`` takes the OpenAI request shape (``model, messages, max_tokens,
temperature, seed``); the last user message is the question, rendered with the run's prompt
(suffix included) exactly as in training, so its score is comparable with the probe's. The reply
is the OpenAI shape plus a top-level ``hneurons`` field: ``p_hallucination, alpha, abstained,
top_neurons``. An abstained answer's original text is not sent.

Requests go through one queue to one worker thread that owns the model: it waits up to
``batch_wait_s`` for more requests (at most ``max_batch``), groups them by decoding settings and
runs one batched :func:`~hneurons.apply.guard.guarded_generate` per group. Every row has its own seed
and the decoding loop is row-independent, so a client gets the same answer alone or in a batch.
A client that disconnects does not stop the batch: the worker finishes, and the result of the
abandoned future is simply dropped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import queue
import socket
import threading
import time
import uuid
from collections import defaultdict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from hneurons.errors import ConfigError, HNeuronsError, MissingExtra

try:
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, ValidationError
except ImportError:
    raise MissingExtra('hneurons serve needs the server packages: pip install "hneurons[serve]"') from None

from hneurons.apply.guard import guarded_generate
from hneurons.apply.state import ScoringState
from hneurons.config import check_guard
from hneurons.core.generation import row_seed
from hneurons.trust import MAX_INPUT_BYTES

MAX_TOKENS_CAP = 2048


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[_Part] | None = None
    name: str | None = None


class ChatRequest(BaseModel):
    """The subset of the OpenAI chat request this server honours; anything else is refused."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_CAP)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_CAP)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int | None = None
    n: Literal[1] = 1
    stream: Literal[False] = False
    user: str | None = None


@dataclass
class _Job:
    question: str
    max_tokens: int
    temperature: float
    seed: int
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class BatchWorker:
    """The single thread that runs the model: collects queued jobs into batches."""

    def __init__(self, state: ScoringState, alpha: float, abstain_above: float | None,
                 max_batch: int = 8, batch_wait_s: float = 0.02) -> None:
        self.state = state
        self.alpha = alpha
        self.abstain_above = abstain_above
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self.queue: queue.Queue[_Job | None] = queue.Queue()
        self.batches = 0  # batched generate calls so far (for tests and logs)
        self._thread = threading.Thread(target=self._loop, name="hneurons-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=60)

    def submit(self, job: _Job) -> concurrent.futures.Future:
        self.queue.put(job)
        return job.future

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, deadline = [first], time.monotonic() + self.batch_wait_s
        while len(jobs) < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                nxt = self.queue.get(timeout=left)
            except queue.Empty:
                break
            if nxt is None:
                return jobs, True
            jobs.append(nxt)
        return jobs, False

    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            jobs, stopping = self._collect(first)
            # a future cancelled before we start (client gone) is skipped; after this it cannot be
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            groups: dict[tuple[int, float], list[_Job]] = defaultdict(list)
            for j in jobs:
                groups[(j.max_tokens, j.temperature)].append(j)
            for (max_tokens, temperature), group in groups.items():
                try:
                    results = guarded_generate(
                        self.state, [j.question for j in group], alpha=self.alpha, abstain_above=self.abstain_above,
                        max_new_tokens=max_tokens, temperature=temperature, seeds=[j.seed for j in group],
                        batch_size=self.max_batch)
                    self.batches += 1
                except BaseException as exc:  # the worker must survive anything a batch raises
                    for j in group:
                        j.future.set_exception(exc)
                    continue
                for j, res in zip(group, results):
                    j.future.set_result(res)
            if stopping:
                return


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={
        "error": {"message": message, "type": "invalid_request_error" if status < 500 else "server_error",
                  "param": param, "code": None}})


def _validation_message(exc: ValidationError) -> tuple[str, str | None]:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ()))
    if err.get("type") == "extra_forbidden":
        return f"unknown field {loc!r}; this server accepts model, messages, max_tokens, temperature, seed", loc
    if err.get("type") == "missing":
        return f"missing required field {loc!r}", loc
    return f"{loc}: {err.get('msg')}", loc or None


def _question(req: ChatRequest) -> str | None:
    for m in reversed(req.messages):
        if m.role == "user":
            content = m.content
            if isinstance(content, list):
                content = "".join(p.text for p in content)
            return content if content and content.strip() else None
    return None


def create_app(state: ScoringState, *, alpha: float = 1.0, abstain_above: float | None = None,
               max_batch: int = 8, batch_wait_s: float = 0.02, max_input_bytes: int = MAX_INPUT_BYTES) -> FastAPI:
    """The FastAPI app serving ``state``'s model with its probe (worker started by the lifespan).

    A request body over ``max_input_bytes`` is refused (413) before it is parsed or tokenized.
    """
    check_guard(alpha, abstain_above)
    if alpha != 1.0 and not len(state.h_neurons):
        raise ConfigError("--alpha needs H-Neurons to scale but the probe has no positive weights; use --alpha 1")
    if max_batch < 1:
        raise ConfigError(f"max_batch must be ≥ 1, got {max_batch}")
    worker = BatchWorker(state, alpha, abstain_above, max_batch, batch_wait_s)
    model_id = str(state.loaded.name)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        try:
            yield
        finally:
            worker.stop()

    app = FastAPI(title="hneurons guarded generation", lifespan=lifespan)
    app.state.worker = worker

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_id, "alpha": alpha, "abstain_above": abstain_above,
                "queued": worker.queue.qsize()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "hneurons"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        raw = b""
        async for part in request.stream():  # read no more than the limit, whatever Content-Length says
            raw += part
            if len(raw) > max_input_bytes:
                return _error(413, f"request body is larger than the limit of {max_input_bytes} bytes "
                                   "(--max-input-bytes); send a shorter request")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, f"request body is not valid JSON ({exc}); send an OpenAI chat request")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object with 'messages'")
        try:
            req = ChatRequest.model_validate(body)
        except ValidationError as exc:
            return _error(400, *_validation_message(exc))
        question = _question(req)
        if question is None:
            return _error(400, "messages has no non-empty user message; the last user message is the question", "messages")
        max_tokens = req.max_completion_tokens or req.max_tokens or state.max_new_tokens
        seed = row_seed(req.seed or 0, 0, 0)
        job = _Job(question, max_tokens, float(req.temperature), seed)
        try:
            result = await asyncio.wrap_future(worker.submit(job))
        except HNeuronsError as exc:
            return _error(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - reported to the client, the server keeps running
            return _error(500, f"generation failed: {type(exc).__name__}: {exc}")
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result["answer"]},
                         "finish_reason": "stop" if result["abstained"] else result["finish_reason"],
                         "logprobs": None}],
            "usage": {"prompt_tokens": result["prompt_tokens"], "completion_tokens": result["completion_tokens"],
                      "total_tokens": result["prompt_tokens"] + result["completion_tokens"]},
            "hneurons": {"p_hallucination": result["p_hallucination"], "alpha": result["alpha"],
                         "abstained": result["abstained"], "top_neurons": result["top_neurons"]},
        })

    return app


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0 = any free port), or one line saying the port is taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r} is not an address this machine can bind ({exc.strerror})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); the port is in use or not allowed, "
                          "pick another with --port") from None
    return sock


def run_server(app: FastAPI, sock: socket.socket) -> None:
    """Serve ``app`` on a socket from :func:`bind_socket` until interrupted (uvicorn logs warnings only)."""
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
