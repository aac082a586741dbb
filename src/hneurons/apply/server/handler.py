"""One generation request from bytes to reply: key, size limit, parsing, queueing, waiting or streaming.

Limits are checked before any work: the key first (401), then ``Content-Length`` and the bytes
actually read against ``max_input_bytes`` (413 with both numbers; a body is never read past the
limit, whatever its header says), then the fields (400), then the queue (429 + ``Retry-After``).
The prompt-length limit needs the tokenizer and is checked by the worker (400 with the numbers).

A client that disconnects cancels its job: a queued job is dropped, a running one is stopped at
the next decode step by the engine's observer, so an abandoned request stops costing batch slots.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from hneurons.apply.server import protocol
from hneurons.apply.server.ops import Metrics, RequestLog, key_accepted
from hneurons.apply.server.worker import BatchWorker, ClientGone, Job, QueueFull
from hneurons.core.generation import row_seed
from hneurons.errors import EndpointError, HNeuronsError

CLIENT_GONE = 499  # the status logged (never sent) for a request whose client left, as nginx does


class Refusal(Exception):
    """A request answered with an error before it reached the model."""

    def __init__(self, response: Response) -> None:
        self.response = response


@dataclass
class Handler:
    """The generation endpoints' shared path; ``slot`` is the app's :class:`~hneurons.apply.server.app.ModelSlot`."""

    opts: Any  # ServeOptions
    slot: Any
    worker: BatchWorker
    log: RequestLog
    metrics: Metrics

    def refuse(self, request: Request, endpoint: str) -> Response | None:
        """401 unless the request carries the server's key (logged with the client's address)."""
        if key_accepted(self.opts.api_key, request.headers.get("authorization")):
            return None
        reason = "no Authorization header" if "authorization" not in request.headers else "wrong key"
        self.log.write(event="refused", endpoint=endpoint, status=401, reason=reason,
                       client=request.client.host if request.client else None)
        self.metrics.observe(endpoint, 401, 0.0)
        return protocol.error(401, "missing or wrong API key; send 'Authorization: Bearer <key>' with the server's "
                                   "--api-key", headers={"WWW-Authenticate": "Bearer"})

    async def read_body(self, request: Request) -> bytes:
        limit = self.opts.max_input_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise Refusal(protocol.error(413, f"request body is {int(declared)} bytes (Content-Length), more than the "
                                              f"limit of {limit} bytes (--max-input-bytes); send a shorter request"))
        raw = bytearray()
        async for part in request.stream():  # a lying or missing Content-Length is caught here
            raw += part
            if len(raw) > limit:
                raise Refusal(protocol.error(413, f"request body is more than the limit of {limit} bytes "
                                                  f"(--max-input-bytes; {len(raw)} read before stopping); send a shorter request"))
        return bytes(raw)

    def parse(self, raw: bytes, endpoint: str) -> protocol.ChatRequest | protocol.CompletionRequest:
        body = protocol.parse_body(raw)
        if isinstance(body, str):
            raise Refusal(protocol.error(400, body))
        model = protocol.ChatRequest if endpoint == "chat" else protocol.CompletionRequest
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise Refusal(protocol.error(400, *protocol.validation_message(exc, endpoint))) from None

    def job(self, req: protocol.ChatRequest | protocol.CompletionRequest) -> Job:
        """The request's rows: ``n`` per prompt, row (i, j) seeded by (request seed, i, j).

        Without a ``seed`` the request gets a random one, so unseeded sampled requests differ.
        """
        if isinstance(req, protocol.ChatRequest):
            questions = [req.question()]
            if questions[0] is None:
                raise Refusal(protocol.error(400, "messages has no non-empty user message; the last user message is "
                                                  "the question", "messages"))
            max_tokens = req.max_completion_tokens or req.max_tokens
        else:
            questions = req.questions()
            if not all(q.strip() for q in questions):
                raise Refusal(protocol.error(400, "prompt is empty; every prompt needs text", "prompt"))
            max_tokens = req.max_tokens
        seed = req.seed if req.seed is not None else secrets.randbits(63)
        rows = [(q, row_seed(seed, i, j)) for i, q in enumerate(questions) for j in range(req.n)]
        return Job([q for q, _ in rows], [s for _, s in rows], max_tokens or self.slot.state.max_new_tokens,
                   float(req.temperature))

    def submit(self, job: Job) -> asyncio.Future:
        try:
            return asyncio.wrap_future(self.worker.submit(job))
        except QueueFull:
            wait = self.worker.retry_after()
            raise Refusal(protocol.error(429, f"the server is busy: {self.worker.max_queue} requests are queued "
                                              f"(--max-queue); retry after {wait} s",
                                         headers={"Retry-After": str(wait)})) from None

    def done(self, rid: str, endpoint: str, status: int, start: float, results: list[dict[str, Any]] | None = None,
             **extra: Any) -> None:
        """Count the request in /metrics and write its log line."""
        latency = time.monotonic() - start
        self.metrics.observe(endpoint, status, latency, results)
        record: dict[str, Any] = {"id": rid, "endpoint": endpoint, "status": status, "latency_s": round(latency, 4)}
        if results:
            one = len(results) == 1
            p = [r["p_hallucination"] for r in results]
            ab = [r["abstained"] for r in results]
            record.update(prompt_tokens=protocol.usage(results)["prompt_tokens"],
                          completion_tokens=sum(r["completion_tokens"] for r in results),
                          p_hallucination=p[0] if one else p, abstained=ab[0] if one else ab)
        self.log.write(**record, **extra)

    async def handle(self, request: Request, endpoint: str) -> Response:
        start, rid = time.monotonic(), protocol.new_id(endpoint)
        if (refused := self.refuse(request, endpoint)) is not None:
            return refused
        try:
            if self.slot.state is None:
                raise Refusal(protocol.error(503, "the model is still loading; retry shortly (GET /health says when "
                                                  "it is ready)", headers={"Retry-After": "5"}))
            req = self.parse(await self.read_body(request), endpoint)
            job = self.job(req)
            if req.stream:
                return self.stream(request, req, job, endpoint, rid, start)
            pending = self.submit(job)
        except Refusal as r:
            self.done(rid, endpoint, r.response.status_code, start)
            return r.response
        try:
            results = await self.wait(request, job, pending)
        except ClientGone:
            self.done(rid, endpoint, CLIENT_GONE, start)
            return Response(status_code=CLIENT_GONE)
        except Exception as exc:  # noqa: BLE001 - reported to the client, the server keeps running
            response = self.failure(exc)
            self.done(rid, endpoint, response.status_code, start)
            return response
        self.done(rid, endpoint, 200, start, results)
        return JSONResponse(protocol.reply(endpoint, rid, self.slot.model_id, results))

    @staticmethod
    def failure(exc: BaseException) -> JSONResponse:
        if isinstance(exc, EndpointError):  # the upstream failed, not the request
            return protocol.error(502, str(exc))
        if isinstance(exc, HNeuronsError):
            return protocol.error(400, str(exc))
        return protocol.error(500, f"generation failed: {type(exc).__name__}: {exc}")

    @staticmethod
    async def wait(request: Request, job: Job, pending: asyncio.Future) -> list[dict[str, Any]]:
        """The job's results; cancels it (and raises :class:`ClientGone`) if the client disconnects first."""
        while not pending.done():
            await asyncio.wait({pending}, timeout=0.2)
            if not pending.done() and await request.is_disconnected():
                job.cancel()
                raise ClientGone
        if pending.cancelled():
            raise ClientGone
        return pending.result()

    def stream(self, request: Request, req: Any, job: Job, endpoint: str, rid: str, start: float) -> Response:
        """Server-sent events: text deltas as decoded, then each choice's last chunk with its score.

        With ``abstain_above`` set, nothing of an answer is sent before its score is known: the
        text (or the abstention) arrives in the choice's last chunk, so a withheld answer is never
        partly shown. Without it, text is sent as each token is decoded.
        """
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        if self.opts.abstain_above is None:
            job.on_delta = lambda row, text: loop.call_soon_threadsafe(events.put_nowait, (row, text))
        pending = self.submit(job)
        job.future.add_done_callback(lambda _: loop.call_soon_threadsafe(events.put_nowait, None))
        usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(self._events(job, pending, events, (endpoint, rid, start, usage)),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def _events(self, job: Job, pending: asyncio.Future, events: asyncio.Queue,
                      meta: tuple[str, str, float, bool]) -> AsyncIterator[bytes]:
        endpoint, rid, start, usage = meta
        model, sent, status = self.slot.model_id, [""] * len(job.questions), CLIENT_GONE
        try:
            if endpoint == "chat":
                for r in range(len(sent)):
                    yield protocol.sse(protocol.chunk(endpoint, rid, model, r, None, first=True))
            while (item := await events.get()) is not None:
                sent[item[0]] += item[1]
                yield protocol.sse(protocol.chunk(endpoint, rid, model, item[0], item[1]))
            try:
                results = pending.result()
            except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - sent as an error event
                error = self.failure(exc)
                status = error.status_code
                yield protocol.sse(error.body.decode())
                return
            for r, res in enumerate(results):
                rest = res["answer"][len(sent[r]):] if res["answer"].startswith(sent[r]) else ""
                yield protocol.sse(protocol.chunk(endpoint, rid, model, r, rest, result=res))
            if usage:
                yield protocol.sse({"id": rid, "object": "chat.completion.chunk" if endpoint == "chat" else
                                    "text_completion", "created": int(time.time()), "model": model, "choices": [],
                                    "usage": protocol.usage(results)})
            yield protocol.sse("[DONE]")
            status = 200
            self.done(rid, endpoint, status, start, results, stream=True)
        finally:
            if status == CLIENT_GONE:  # the client left mid-stream (the generator was closed)
                job.cancel()
                pending.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody reads it now
                self.done(rid, endpoint, status, start, stream=True)
            elif status != 200:
                self.done(rid, endpoint, status, start, stream=True)
