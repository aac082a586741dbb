"""The FastAPI app: routes, limits, streaming, and loading the model after the port is bound.

``create_app`` takes a :class:`~hneurons.apply.state.ScoringState` or a function that loads one;
given a function, the lifespan loads it in a thread, so ``/health`` answers 503 ("loading") at once
and 200 when the model is ready (a failed load is reported there and stops :func:`run_server`).
"""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from hneurons.apply.guard import GuardOptions
from hneurons.apply.server import protocol
from hneurons.apply.server.engines import Limits, LocalEngine, Upstream, UpstreamEngine
from hneurons.apply.server.handler import Handler
from hneurons.apply.server.ops import Metrics, RequestLog
from hneurons.apply.server.worker import BatchWorker
from hneurons.apply.state import ScoringState
from hneurons.config import check_guard
from hneurons.errors import ConfigError
from hneurons.trust import MAX_INPUT_BYTES


@dataclass(frozen=True)
class ServeOptions:
    """How the server guards, batches and protects itself (the ``hneurons serve`` options).

    ``max_queue`` bounds the requests waiting for the model (429 beyond it); ``max_prompt_tokens``
    None means the model's context minus ``max_tokens``; ``api_key`` None serves without a key;
    ``request_log`` is a path, ``"-"`` (stderr) or None; ``upstream`` generates elsewhere.
    """

    alpha: float = 1.0
    abstain_above: float | None = None
    max_batch: int = 8
    batch_wait_s: float = 0.02
    max_queue: int = 64
    max_input_bytes: int = MAX_INPUT_BYTES
    max_prompt_tokens: int | None = None
    api_key: str | None = None
    request_log: str | None = None
    upstream: Upstream | None = None

    def __post_init__(self) -> None:
        check_guard(self.alpha, self.abstain_above)
        for name in ("max_batch", "max_queue", "max_input_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ConfigError(f"max_prompt_tokens must be ≥ 1, got {self.max_prompt_tokens}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("--api-key is empty; give a key or leave it out")


class ModelSlot:
    """The state being served: loading (in a thread), ready, or failed with an error."""

    def __init__(self, source: ScoringState | Callable[[], ScoringState], opts: ServeOptions, worker: BatchWorker):
        self.source, self.opts, self.worker = source, opts, worker
        self.state: ScoringState | None = None
        self.error: BaseException | None = None
        self.on_fail: Callable[[], None] = lambda: None
        if isinstance(source, ScoringState):
            self._ready(source)  # options are checked against the probe now, as create_app's caller expects

    def _ready(self, state: ScoringState) -> None:
        guard = GuardOptions(alpha=self.opts.alpha, abstain_above=self.opts.abstain_above)
        limits = Limits(self.opts.max_prompt_tokens)
        up = self.opts.upstream
        self.engine = UpstreamEngine(state, guard, limits, up) if up else LocalEngine(state, guard, limits)
        self.state = state

    def start(self) -> None:
        if self.state is not None:
            self.worker.start(self.engine)
            return
        threading.Thread(target=self._load, name="hneurons-load", daemon=True).start()

    def _load(self) -> None:
        try:
            self._ready(self.source())
            self.worker.start(self.engine)
        except BaseException as exc:  # reported on /health and by run_server
            self.error = exc
            self.on_fail()

    @property
    def model_id(self) -> str:
        return str(self.state.loaded.name) if self.state is not None else "loading"


def create_app(source: ScoringState | Callable[[], ScoringState], options: ServeOptions | None = None,
               **overrides: Any) -> FastAPI:
    """The app serving ``source`` (a state, or a function loading one after the server is up).

    ``options`` (:class:`ServeOptions`) with any of its fields as keywords on top.
    """
    try:
        opts = dataclasses.replace(options or ServeOptions(), **overrides)
    except TypeError as exc:
        raise ConfigError(f"create_app: {exc}; options are {', '.join(f.name for f in dataclasses.fields(ServeOptions))}") from None
    worker = BatchWorker(opts.max_batch, opts.batch_wait_s, opts.max_queue)
    slot = ModelSlot(source, opts, worker)
    log, metrics = RequestLog(opts.request_log), Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        slot.start()
        try:
            yield
        finally:
            worker.stop()
            log.close()

    app = FastAPI(title="hneurons guarded generation", lifespan=lifespan)
    app.state.worker, app.state.slot, app.state.metrics = worker, slot, metrics
    _error_handlers(app)
    _routes(app, opts, slot, Handler(opts, slot, worker, log, metrics))
    return app


def _routes(app: FastAPI, opts: ServeOptions, slot: ModelSlot, ctx: Handler) -> None:
    """Health, metrics, model list and the two OpenAI generation routes (the handler does the work)."""
    worker, metrics = ctx.worker, ctx.metrics

    @app.get("/health")
    async def health() -> JSONResponse:
        if slot.error is not None:
            return JSONResponse({"status": "failed", "error": f"{type(slot.error).__name__}: {slot.error}"}, 500)
        if slot.state is None:
            return JSONResponse({"status": "loading"}, 503, headers={"Retry-After": "5"})
        return JSONResponse({"status": "ok", "model": slot.model_id, "alpha": opts.alpha,
                             "abstain_above": opts.abstain_above, "queued": worker.queue.qsize(),
                             "upstream": opts.upstream.url if opts.upstream else None})

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        if (refused := ctx.refuse(request, "metrics")) is not None:
            return refused
        return PlainTextResponse(metrics.render(worker.queue.qsize(), slot.state is not None, worker.batches),
                                 media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        if (refused := ctx.refuse(request, "models")) is not None:
            return refused
        data = [] if slot.state is None else [{"id": slot.model_id, "object": "model", "created": 0, "owned_by": "hneurons"}]
        return JSONResponse({"object": "list", "data": data})

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await ctx.handle(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await ctx.handle(request, "completions")


def _error_handlers(app: FastAPI) -> None:
    """404, 405, validation and unexpected errors in OpenAI's shape, never FastAPI's ``detail`` or plain text."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: f"no route {request.url.path}; this server has /v1/chat/completions, /v1/completions, "
                        "/v1/models, /health and /metrics",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return protocol.error(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return protocol.error(400, f"invalid request: {exc.errors()[0].get('msg')}")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return protocol.error(500, f"internal error: {type(exc).__name__}; the server keeps running")


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
    """Serve ``app`` on a socket from :func:`bind_socket` until interrupted (uvicorn logs warnings only).

    A model that fails to load stops the server, and its error is raised here (the CLI prints it).
    """
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    slot: ModelSlot = app.state.slot
    slot.on_fail = lambda: setattr(server, "should_exit", True)
    server.run(sockets=[sock])
    if slot.error is not None:
        raise slot.error
