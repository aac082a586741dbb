"""What an operator needs around the endpoints: API keys, a JSON-lines request log, Prometheus metrics.

The key is compared with :func:`hmac.compare_digest` (no timing leak of how much of it matched);
a refused request is logged with the client's address, never with the key it sent.
"""

from __future__ import annotations

import hmac
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

API_KEY_ENV = "HNEURONS_API_KEY"
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def key_accepted(expected: str | None, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <expected>`` (always, when no key is set)."""
    if expected is None:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    ok = hmac.compare_digest(given.strip().encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))
    return scheme.lower() == "bearer" and ok


class RequestLog:
    """One JSON object per line for every request answered or refused (to a file or stderr)."""

    def __init__(self, where: str | Path | None) -> None:
        self._lock = threading.Lock()
        self._fh: IO[str] | None
        if where is None:
            self._fh = None
        elif str(where) == "-":
            self._fh = sys.stderr
        else:
            self._fh = Path(where).open("a", encoding="utf-8")

    def write(self, **record: Any) -> None:
        if self._fh is None:
            return
        line = json.dumps({"time": round(time.time(), 3), **record}, ensure_ascii=False)
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None and self._fh is not sys.stderr:
            self._fh.close()


class Metrics:
    """Counters and a latency histogram, written in the Prometheus text format (version 0.0.4)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()  # (endpoint, status)
        self.tokens: Counter[str] = Counter()  # prompt / completion
        self.abstained = 0
        self.cancelled = 0
        self.buckets = [0] * len(LATENCY_BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe(self, endpoint: str, status: int, latency_s: float, results: list[dict[str, Any]] | None = None) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1
            if status == 499:
                self.cancelled += 1
            if results is None:
                return
            self.latency_sum += latency_s
            self.latency_count += 1
            for i, bound in enumerate(LATENCY_BUCKETS):
                self.buckets[i] += latency_s <= bound
            for r in results:
                self.tokens["prompt"] += r["prompt_tokens"]
                self.tokens["completion"] += r["completion_tokens"]
                self.abstained += bool(r["abstained"])

    def render(self, queued: int, loaded: bool, batches: int) -> str:
        """The exposition text; ``queued``, ``loaded`` and ``batches`` come from the worker at scrape time."""
        with self._lock:
            lines = ["# HELP hneurons_requests_total Requests answered, by endpoint and HTTP status.",
                     "# TYPE hneurons_requests_total counter"]
            lines += [f'hneurons_requests_total{{endpoint="{e}",status="{s}"}} {n}'
                      for (e, s), n in sorted(self.requests.items())]
            lines += ["# HELP hneurons_tokens_total Tokens processed, by kind.", "# TYPE hneurons_tokens_total counter"]
            lines += [f'hneurons_tokens_total{{kind="{k}"}} {self.tokens[k]}' for k in ("prompt", "completion")]
            lines += _plain("abstained_total", "Answers withheld because p_hallucination exceeded the threshold.",
                            "counter", self.abstained)
            lines += _plain("cancelled_total", "Requests stopped because their client disconnected.", "counter",
                            self.cancelled)
            lines += ["# HELP hneurons_request_latency_seconds Latency of answered requests.",
                      "# TYPE hneurons_request_latency_seconds histogram"]
            lines += [f'hneurons_request_latency_seconds_bucket{{le="{b}"}} {n}'
                      for b, n in zip(LATENCY_BUCKETS, self.buckets)]
            lines += [f'hneurons_request_latency_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                      f"hneurons_request_latency_seconds_sum {self.latency_sum:.6f}",
                      f"hneurons_request_latency_seconds_count {self.latency_count}"]
        lines += _plain("queue_depth", "Requests waiting for the model.", "gauge", queued)
        lines += _plain("model_loaded", "1 once the model is loaded and serving.", "gauge", int(loaded))
        lines += _plain("batches_total", "Batched decode calls run.", "counter", batches)
        return "\n".join(lines) + "\n"


def _plain(name: str, doc: str, kind: str, value: int) -> list[str]:
    return [f"# HELP hneurons_{name} {doc}", f"# TYPE hneurons_{name} {kind}", f"hneurons_{name} {value}"]
