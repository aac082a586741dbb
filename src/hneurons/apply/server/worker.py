"""The one thread that runs the model: a bounded queue of jobs, collected into batches.

A job is one request: one row per answer (``n`` rows per prompt), each with its own seed. The
worker waits up to ``batch_wait_s`` for more jobs (at most ``max_batch``), refuses the prompts over
the length limit one job at a time (a long prompt fails its own request, not its batch), groups the
rest by decoding settings and hands each group to the engine (:mod:`hneurons.apply.server.engines`).
The queue is bounded: :meth:`BatchWorker.submit` raises :class:`QueueFull` instead of letting
requests pile up, and the route answers 429 with the wait it estimates.
"""

from __future__ import annotations

import concurrent.futures
import math
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hneurons.errors import HNeuronsError

DeltaSink = Callable[[int, str], None]  # (row, text) from the worker thread, as it is decoded


class QueueFull(Exception):
    """The worker's queue holds ``max_queue`` jobs already."""


class ClientGone(Exception):
    """The job was cancelled because its client disconnected."""


@dataclass
class Job:
    """One request's rows: ``questions[r]`` answered with seed ``seeds[r]``.

    ``on_delta`` (streaming) is called from the worker thread with each row's new text; setting
    :attr:`cancelled` (the client left) stops the rows at the next decode step.
    """

    questions: list[str]
    seeds: list[int]
    max_tokens: int
    temperature: float
    on_delta: DeltaSink | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)

    def cancel(self) -> None:
        """Stop this job: dropped if not started, stopped between decode steps if running."""
        self.cancelled.set()
        self.future.cancel()


class Engine(Protocol):
    """What answers a group of jobs with the same decoding settings."""

    def check(self, job: Job) -> None:
        """Raise an :class:`~hneurons.errors.HNeuronsError` for a job that cannot be answered."""

    def run(self, jobs: list[Job], max_tokens: int, temperature: float) -> list[list[dict[str, Any]]]:
        """Each job's result rows, in order."""


class BatchWorker:
    """The single thread that runs the engine; requests reach it through a bounded queue."""

    def __init__(self, max_batch: int = 8, batch_wait_s: float = 0.02, max_queue: int = 64) -> None:
        self.engine: Engine | None = None
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self.max_queue = max_queue
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self.batches = 0  # engine calls so far (for tests and /metrics)
        self.batch_seconds = 0.0  # moving average of one engine call, for Retry-After
        self._thread = threading.Thread(target=self._loop, name="hneurons-worker", daemon=True)

    def start(self, engine: Engine) -> None:
        self.engine = engine
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.queue.put(None)
            self._thread.join(timeout=60)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, job: Job) -> concurrent.futures.Future:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise QueueFull from None
        return job.future

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained by one batch (at least 1)."""
        per_batch = self.batch_seconds or 1.0
        return max(1, math.ceil(per_batch * (self.queue.qsize() / self.max_batch + 1)))

    def _collect(self, first: Job) -> tuple[list[Job], bool]:
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

    def _admit(self, jobs: list[Job]) -> list[Job]:
        """The jobs to run: not cancelled (their client is gone) and passing the engine's checks."""
        out = []
        for j in jobs:
            if j.cancelled.is_set() or not j.future.set_running_or_notify_cancel():
                continue
            try:
                self.engine.check(j)
            except HNeuronsError as exc:
                j.future.set_exception(exc)
                continue
            out.append(j)
        return out

    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            jobs, stopping = self._collect(first)
            groups: dict[tuple[int, float], list[Job]] = defaultdict(list)
            for j in self._admit(jobs):
                groups[(j.max_tokens, j.temperature)].append(j)
            for (max_tokens, temperature), group in groups.items():
                self._run(group, max_tokens, temperature)
            if stopping:
                return

    def _run(self, group: list[Job], max_tokens: int, temperature: float) -> None:
        start = time.monotonic()
        try:
            results = self.engine.run(group, max_tokens, temperature)
        except BaseException as exc:  # the worker must survive anything a batch raises
            for j in group:
                j.future.set_exception(exc)
            return
        took = time.monotonic() - start
        self.batch_seconds = took if not self.batches else 0.8 * self.batch_seconds + 0.2 * took
        self.batches += 1
        for j, res in zip(group, results):
            if j.cancelled.is_set():
                j.future.set_exception(ClientGone())
            else:
                j.future.set_result(res)
