"""Latency and throughput of `hneurons serve` on the embedded model at 1 and 16 concurrent clients.

Default: guarded vs not. "Guarded" uses a synthetic probe with 24 non-zero neurons, so CETT is recorded and
the answer is scored. "Unguarded" uses an all-zero probe, so there are no hooks and no scoring, on the same
server path. Both servers run in this process on real uvicorn.

--upstream: what upstream mode's scoring pass costs (issue 29). An unguarded `hneurons serve` is the upstream.
"Generation alone" sends each question straight to its /v1/completions, with the prompt and fields the guard
would send. "Generation + scoring" sends the same question as chat to a guarded `hneurons serve --upstream` in
front of it, which forwards it and scores the answer with one forward pass of the local model. Both servers are
child processes started as a user starts them; the two take turns, one round of requests each, so that load from
elsewhere falls on both. The overhead is the guarded p50 over the direct one, as a ratio and in ms.

The last line is one JSON object.

    python benchmarks/serve.py --requests 16 --tokens 8
    python benchmarks/serve.py --upstream --requests 16 --tokens 16
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from server_kit import serve_process, served, synthetic_run  # noqa: E402

from hneurons.apply.server import create_app  # noqa: E402
from hneurons.apply.state import load_state  # noqa: E402
from hneurons.core.models import LoadedModel, load_model  # noqa: E402

CLIENTS = (1, 16)
# one request: (URL, JSON body) for request number i
Request = Callable[[int], tuple[str, dict[str, Any]]]


def _question(i: int) -> str:
    return f"Name a famous city number {i}."


def _chat(base: str, tokens: int) -> Request:
    """Chat requests to a server at ``base``, as a client of `hneurons serve` sends them."""
    return lambda i: (f"{base}/v1/chat/completions", {"messages": [{"role": "user", "content": _question(i)}],
                                                      "max_tokens": tokens, "temperature": 0})


def _send(request: Request, numbers: range, clients: int) -> tuple[list[float], float]:
    """Send requests ``numbers`` from ``clients`` threads; each one's latency and the wall time of all."""
    def one(i: int) -> float:
        url, body = request(i)
        t = time.perf_counter()
        r = httpx.post(url, timeout=3600, json=body)
        assert r.status_code == 200, r.text
        return time.perf_counter() - t

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        lat = list(pool.map(one, numbers))
    return lat, time.perf_counter() - start


def _summary(lat: list[float], wall: float, clients: int) -> dict[str, Any]:
    return {"clients": clients, "p50_s": round(float(np.percentile(lat, 50)), 3),
            "p95_s": round(float(np.percentile(lat, 95)), 3), "max_s": round(max(lat), 3),
            "req_per_s": round(len(lat) / wall, 3)}


def _measure(request: Request, requests: int, clients: int) -> dict[str, Any]:
    """Latency percentiles and throughput of ``requests`` requests from ``clients`` threads."""
    return _summary(*_send(request, range(requests), clients), clients)


def _in_process(loaded: LoadedModel, requests: int, tokens: int) -> dict[str, Any]:
    """Guarded (24-neuron probe) vs unguarded (all-zero probe) servers in this process."""
    out: dict[str, Any] = {}
    for name, neurons in (("unguarded", 0), ("guarded", 24)):
        root = synthetic_run(Path(tempfile.mkdtemp()), loaded, tokens, neurons=neurons)
        with served(create_app(load_state(root, model=loaded), max_batch=16, batch_wait_s=0.05)) as base:
            _measure(_chat(base, tokens), 2, 1)  # warm-up
            out[name] = [_measure(_chat(base, tokens), requests, c) for c in CLIENTS]
    return out


def _overhead(alone: dict[str, Any], guarded: dict[str, Any]) -> dict[str, Any]:
    return {"clients": alone["clients"], "p50_ratio": round(guarded["p50_s"] / alone["p50_s"], 3),
            "p50_ms": round(1000 * (guarded["p50_s"] - alone["p50_s"]), 1),
            "p95_ms": round(1000 * (guarded["p95_s"] - alone["p95_s"]), 1),
            "req_per_s_ratio": round(guarded["req_per_s"] / alone["req_per_s"], 3)}


def _alternately(a: Request, b: Request, requests: int, clients: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``a`` and ``b`` measured in turns of ``clients`` requests each, so that a change of load falls on both."""
    clients = min(clients, requests)
    lat: tuple[list[float], list[float]] = ([], [])
    wall = [0.0, 0.0]
    for start in range(0, requests, clients):
        for k, request in enumerate((a, b)):
            got, took = _send(request, range(start, min(start + clients, requests)), clients)
            lat[k].extend(got)
            wall[k] += took
    return _summary(lat[0], wall[0], clients), _summary(lat[1], wall[1], clients)


def _upstream(loaded: LoadedModel, requests: int, tokens: int) -> dict[str, Any]:
    """Generation alone (straight to an unguarded upstream) vs through a guarded `serve --upstream`."""
    base = Path(tempfile.mkdtemp())
    plain = synthetic_run(base / "plain", loaded, tokens, neurons=0)
    guard = synthetic_run(base / "guard", loaded, tokens)
    prompt = load_state(guard, model=loaded).prompt  # what the guard sends upstream for a question
    opts = ("--max-batch", "16", "--request-log", str(base / "requests.jsonl"))
    out: dict[str, Any] = {"generation": [], "generation_and_scoring": [], "overhead": []}
    with serve_process(str(plain), *opts) as (up, _), \
            serve_process(str(guard), *opts, "--upstream", f"{up}/v1", "--upstream-model", "embedded") as (front, _):
        def direct(i: int) -> tuple[str, dict[str, Any]]:
            return f"{up}/v1/completions", {"model": "embedded", "prompt": prompt(_question(i)), "max_tokens": tokens,
                                            "temperature": 0, "n": 1, "seed": i}

        _alternately(direct, _chat(front, tokens), 2, 1)  # warm-up
        for c in CLIENTS:
            alone, both = _alternately(direct, _chat(front, tokens), requests, c)
            out["generation"].append(alone)
            out["generation_and_scoring"].append(both)
            out["overhead"].append(_overhead(alone, both))
            print(json.dumps({"generation": alone, "generation_and_scoring": both}), file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--upstream", action="store_true",
                    help="measure upstream mode: generation alone vs generation + the scoring pass")
    args = ap.parse_args()
    loaded = load_model(None, dtype="float32", device="cpu")
    out = {"cpus": os.cpu_count(), "tokens": args.tokens, "requests": args.requests}
    out.update((_upstream if args.upstream else _in_process)(loaded, args.requests, args.tokens))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
