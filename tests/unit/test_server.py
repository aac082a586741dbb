"""The OpenAI-compatible server: real uvicorn on a free local port, concurrent clients, bad requests."""

from __future__ import annotations

import concurrent.futures
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server_kit import served  # noqa: E402
from test_scoring import QUESTIONS  # noqa: E402

from hneurons.errors import ConfigError  # noqa: E402
from hneurons.core.generation import row_seed  # noqa: E402
from hneurons.apply.guard import guarded_generate  # noqa: E402
from hneurons.apply.state import ABSTAIN_TEXT  # noqa: E402
from hneurons.apply.server import create_app  # noqa: E402

MAX_TOKENS = 8


@pytest.fixture(scope="module")
def server(state):
    app = create_app(state, batch_wait_s=0.3, max_batch=8)
    with served(app) as url:
        yield url, app


def _ask(url: str, question: str, **extra) -> dict:
    body = {"model": "tiny", "messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": question}],
            "max_tokens": MAX_TOKENS, "temperature": 0, **extra}
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_health_and_models(server):
    url, _ = server
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    models = httpx.get(f"{url}/v1/models").json()
    assert models["data"][0]["id"] == "tiny"


def test_answer_matches_guarded_generate(server, state):
    url, _ = server
    got = _ask(url, QUESTIONS[0])
    (ref,) = guarded_generate(state, [QUESTIONS[0]], max_new_tokens=MAX_TOKENS, seeds=[row_seed(0, 0, 0)])
    assert got["object"] == "chat.completion" and got["model"] == "tiny"
    choice = got["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": ref["answer"]}
    assert choice["finish_reason"] == ref["finish_reason"]
    h = got["hneurons"]
    assert h["p_hallucination"] == pytest.approx(ref["p_hallucination"], abs=1e-6)
    assert h["alpha"] == 1.0 and h["abstained"] is False and len(h["top_neurons"]) == 5
    assert got["usage"]["completion_tokens"] == ref["completion_tokens"]


def test_concurrent_clients_get_their_own_answers(server):
    url, app = server
    questions = QUESTIONS[:6]
    alone = [_ask(url, q) for q in questions]
    before = app.state.worker.batches
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda q: _ask(url, q), questions))
    assert app.state.worker.batches - before < len(questions)  # requests were really batched
    for a, t in zip(alone, together):
        assert t["choices"][0]["message"]["content"] == a["choices"][0]["message"]["content"]
        assert t["hneurons"]["p_hallucination"] == pytest.approx(a["hneurons"]["p_hallucination"], abs=1e-5)
    assert len({a["choices"][0]["message"]["content"] for a in alone}) > 1


def test_bad_requests_get_400_and_server_keeps_answering(server):
    url, _ = server
    post = lambda content, **kw: httpx.post(f"{url}/v1/chat/completions", content=content,  # noqa: E731
                                            headers={"content-type": "application/json"}, timeout=30, **kw)
    r = post(b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = post(b'{"model": "tiny"}')
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    r = post(b'{"messages": [{"role": "user", "content": "hi"}], "frobnicate": 1}')
    assert r.status_code == 400 and "frobnicate" in r.json()["error"]["message"]
    r = post(b'{"messages": [{"role": "system", "content": "hi"}]}')
    assert r.status_code == 400 and "user message" in r.json()["error"]["message"]
    r = post(b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}')
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    r = post(b'[1, 2]')
    assert r.status_code == 400
    assert _ask(url, QUESTIONS[1])["hneurons"]["p_hallucination"] is not None


def test_client_disconnect_does_not_break_the_worker(server):
    url, app = server
    expected = _ask(url, QUESTIONS[2])
    body = {"messages": [{"role": "user", "content": QUESTIONS[3]}], "max_tokens": 200}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{url}/v1/chat/completions", json=body, timeout=0.05)
    after = _ask(url, QUESTIONS[2])
    assert after["choices"][0]["message"] == expected["choices"][0]["message"]
    deadline = time.monotonic() + 30
    while app.state.worker.queue.qsize() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.state.worker.queue.qsize() == 0 and app.state.worker._thread.is_alive()


def test_openai_client_and_abstention(state):
    openai = pytest.importorskip("openai")
    app = create_app(state, abstain_above=0.0)  # every scored answer is above 0: all abstain
    with served(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        resp = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": QUESTIONS[0]}],
                                              max_tokens=MAX_TOKENS, temperature=0)
        assert resp.choices[0].message.content == ABSTAIN_TEXT
        extra = resp.model_extra["hneurons"]
        assert extra["abstained"] is True and 0.0 < extra["p_hallucination"] < 1.0


def test_create_app_validates_options(state):
    with pytest.raises(ConfigError, match="abstain-above"):
        create_app(state, abstain_above=1.5)
    with pytest.raises(ConfigError, match="alpha"):
        create_app(state, alpha=-1.0)
