"""``--upstream``: answers written by a second OpenAI-compatible server, scored by the local model."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server_kit import served  # noqa: E402
from test_scoring import QUESTIONS  # noqa: E402

from hneurons.apply.score import score  # noqa: E402
from hneurons.apply.server import Upstream, create_app  # noqa: E402
from hneurons.apply.state import ABSTAIN_TEXT  # noqa: E402
from hneurons.errors import ConfigError  # noqa: E402

ANSWERS = {QUESTIONS[0]: "William Shakespeare wrote it.", QUESTIONS[1]: "Paris is the capital."}


@pytest.fixture(scope="module")
def upstream(state):
    """A stub vLLM: /v1/completions answering by which question the rendered prompt holds."""
    stub, seen = FastAPI(), []

    @stub.post("/v1/completions")
    async def completions(request: Request) -> dict:
        body = await request.json()
        seen.append(body)
        question = next(q for q in ANSWERS if state.prompt(q) == body["prompt"])
        return {"choices": [{"index": 0, "text": " " + ANSWERS[question] + "\n", "finish_reason": "stop"}]}

    with served(stub) as url:
        yield f"{url}/v1", seen


def test_upstream_answers_are_scored_like_score(state, upstream):
    url, seen = upstream
    app = create_app(state, upstream=Upstream(url, "stub-model"))
    with served(app) as base:
        r = httpx.post(f"{base}/v1/chat/completions", timeout=60, json={
            "messages": [{"role": "user", "content": QUESTIONS[0]}], "max_tokens": 9, "seed": 4, "n": 2})
        assert r.status_code == 200, r.text
        health = httpx.get(f"{base}/health", timeout=10).json()
    (ref,) = score(state, [{"question": QUESTIONS[0], "answer": ANSWERS[QUESTIONS[0]]}])
    body = r.json()
    assert [c["message"]["content"] for c in body["choices"]] == [ANSWERS[QUESTIONS[0]]] * 2
    assert body["hneurons"]["p_hallucination"] == pytest.approx(ref["p_hallucination"], abs=1e-9)
    assert body["hneurons"]["top_neurons"] == ref["top_neurons"]
    assert health["upstream"] == url
    sent = seen[-2:]
    assert all(s["model"] == "stub-model" and s["max_tokens"] == 9 and s["prompt"] == state.prompt(QUESTIONS[0])
               for s in sent)
    assert sent[0]["seed"] != sent[1]["seed"]  # each choice has its own seed


def test_upstream_abstains_and_streams_one_piece(state, upstream):
    url, _ = upstream
    app = create_app(state, upstream=Upstream(url, "stub-model"), abstain_above=0.0)
    with served(app) as base:
        with httpx.stream("POST", f"{base}/v1/chat/completions", timeout=60, json={
                "messages": [{"role": "user", "content": QUESTIONS[1]}], "stream": True}) as r:
            lines = [x for x in r.iter_lines() if x.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert ABSTAIN_TEXT in lines[-2] and '"abstained": true' in lines[-2]
    assert not any(ANSWERS[QUESTIONS[1]] in x for x in lines)


def test_upstream_cannot_scale_neurons_and_reports_a_dead_upstream(state):
    with pytest.raises(ConfigError, match="--alpha"):
        create_app(state, upstream=Upstream("http://127.0.0.1:9/v1", "m"), alpha=0.5)
    app = create_app(state, upstream=Upstream("http://127.0.0.1:9/v1", "m", timeout_s=2))
    with served(app) as base:
        r = httpx.post(f"{base}/v1/chat/completions", timeout=60,
                       json={"messages": [{"role": "user", "content": QUESTIONS[0]}]})
    assert r.status_code == 502 and "cannot reach" in r.json()["error"]["message"]
