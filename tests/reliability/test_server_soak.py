"""Server soak: 64 concurrent chat requests plus malformed ones against a real uvicorn on the embedded model.

Every valid request must be answered with its score, every malformed one refused with a 4xx and a
message, and the server must still answer afterwards. The probe is synthetic (random weights over
the embedded model's neurons): the soak tests the serving path, not the probe's quality.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys
from pathlib import Path

import httpx
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server_kit import served, synthetic_run  # noqa: E402

from hneurons.core.models import load_model  # noqa: E402
from hneurons.apply.state import load_state  # noqa: E402
from hneurons.apply.server import create_app  # noqa: E402

MAX_TOKENS = 4
N_VALID = 64


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    loaded = load_model(None, dtype="float32", device="cpu")
    root = synthetic_run(tmp_path_factory.mktemp("run"), loaded, MAX_TOKENS)
    with served(create_app(load_state(root, model=loaded), alpha=1.0, max_batch=32, batch_wait_s=0.25)) as base:
        yield base


def _chat(i: int) -> dict:
    return {"model": "x", "messages": [{"role": "user", "content": f"Name a famous city number {i}."}],
            "max_tokens": MAX_TOKENS, "temperature": 0, "seed": i}


MALFORMED = [
    ("POST", "/v1/chat/completions", b"{not json", 400),
    ("POST", "/v1/chat/completions", b"[1, 2]", 400),
    ("POST", "/v1/chat/completions", json.dumps({"model": "x"}).encode(), 400),
    ("POST", "/v1/chat/completions", json.dumps({"messages": []}).encode(), 400),
    ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "hi"}], "tools": []}).encode(), 400),
    ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}).encode(), 400),
    ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}).encode(), 400),
    ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "hi"}], "n": 100}).encode(), 400),
    ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "system", "content": "only a system turn"}]}).encode(), 400),
    ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "   "}]}).encode(), 400),
    ("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}).encode(), 400),
    ("POST", "/v1/chat/completions", "\udcff".encode("utf-8", "surrogatepass"), 400),
    ("GET", "/v1/chat/completions", b"", 405),
    ("POST", "/v1/nothing", b"{}", 404),
]


def test_soak_concurrent_and_malformed(url: str) -> None:
    def valid(i: int) -> tuple[int, httpx.Response]:
        return i, httpx.post(f"{url}/v1/chat/completions", json=_chat(i), timeout=300)

    def bad(case) -> tuple[tuple, httpx.Response]:
        method, path, body, _ = case
        return case, httpx.request(method, f"{url}{path}", content=body, timeout=60,
                                   headers={"content-type": "application/json"})

    with concurrent.futures.ThreadPoolExecutor(max_workers=N_VALID + len(MALFORMED)) as pool:
        jobs = [pool.submit(valid, i) for i in range(N_VALID)]
        jobs += [pool.submit(bad, case) for case in MALFORMED]  # while the valid ones are queued
        results = [j.result() for j in jobs]

    for i, r in results[:N_VALID]:
        assert r.status_code == 200, (i, r.text)
        body = r.json()
        assert isinstance(body["choices"][0]["message"]["content"], str)
        p = body["hneurons"]["p_hallucination"]
        assert p is None or 0.0 <= p <= 1.0, body
        assert body["usage"]["completion_tokens"] <= MAX_TOKENS
    scored = sum(r.json()["hneurons"]["p_hallucination"] is not None for _, r in results[:N_VALID])
    assert scored >= N_VALID * 3 // 4  # a score for every answer whose span is locatable
    for (method, path, _, status), r in results[N_VALID:]:
        assert r.status_code == status, (method, path, r.status_code, r.text)
        err = r.json()
        message = err["error"]["message"]  # OpenAI's shape for every error, 404 and 405 included
        assert isinstance(message, str) and message.strip()

    # still up, and the same request alone gets the same greedy answer it got under load
    assert httpx.get(f"{url}/health", timeout=30).json()["status"] == "ok"
    again = httpx.post(f"{url}/v1/chat/completions", json=_chat(0), timeout=120)
    assert again.status_code == 200
    assert again.json()["choices"][0]["message"]["content"] == results[0][1].json()["choices"][0]["message"]["content"]
