"""Operating the server: API key, size and prompt limits, cancellation, 429, logs, metrics, health, errors."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server_kit import served  # noqa: E402
from test_scoring import QUESTIONS, make_loaded, write_run  # noqa: E402

from hneurons.apply.server import create_app  # noqa: E402
from hneurons.apply.server.engines import prompt_tokens  # noqa: E402
from hneurons.apply.state import load_state  # noqa: E402
from hneurons.errors import ConfigError  # noqa: E402

CHAT = "/v1/chat/completions"


def _body(question: str = QUESTIONS[0], **extra) -> dict:
    return {"messages": [{"role": "user", "content": question}], "max_tokens": 4, "temperature": 0, **extra}


def _err(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err["message"]


class _Spy:
    """Wraps the worker's engine: records results, and can hold a batch until released."""

    def __init__(self, engine, hold: bool = False) -> None:
        self.engine, self.results = engine, []
        self.started, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()

    def check(self, job) -> None:
        self.engine.check(job)

    def run(self, jobs, max_tokens, temperature):
        self.started.set()
        self.release.wait(60)
        out = self.engine.run(jobs, max_tokens, temperature)
        self.results += out
        return out


def test_api_key_refused_and_accepted_and_logged(state, tmp_path):
    log = tmp_path / "requests.jsonl"
    app = create_app(state, api_key="s3cret", request_log=str(log))
    with served(app) as url:
        assert "API key" in _err(httpx.post(url + CHAT, json=_body(), timeout=30), 401)
        wrong = httpx.post(url + CHAT, json=_body(), headers={"Authorization": "Bearer nope"}, timeout=30)
        assert _err(wrong, 401) and wrong.headers["www-authenticate"] == "Bearer"
        assert httpx.get(url + "/metrics", timeout=30).status_code == 401
        ok = httpx.post(url + CHAT, json=_body(), headers={"Authorization": "Bearer s3cret"}, timeout=60)
        assert ok.status_code == 200, ok.text
        assert httpx.get(url + "/health", timeout=30).status_code == 200  # load balancers need no key
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    refused = [x for x in lines if x.get("event") == "refused"]
    assert [x["reason"] for x in refused] == ["no Authorization header", "wrong key", "no Authorization header"]
    assert all("s3cret" not in json.dumps(x) and "nope" not in json.dumps(x) for x in lines)
    (answered,) = [x for x in lines if x.get("status") == 200]
    assert answered["id"].startswith("chatcmpl-") and answered["completion_tokens"] >= 1
    assert answered["latency_s"] > 0 and answered["abstained"] is False
    assert answered["p_hallucination"] == pytest.approx(ok.json()["hneurons"]["p_hallucination"])


def test_oversize_body_413_by_header_and_while_reading(state):
    app = create_app(state, max_input_bytes=1000)
    with served(app) as url:
        big = json.dumps(_body("Who wrote Hamlet? " * 100)).encode()
        msg = _err(httpx.post(url + CHAT, content=big, timeout=30), 413)
        assert f"{len(big)} bytes" in msg and "limit of 1000 bytes" in msg

        def chunks():  # no Content-Length: the limit must hold while reading
            for _ in range(100):
                yield b" " * 100

        msg = _err(httpx.post(url + CHAT, content=chunks(), timeout=30), 413)
        assert "limit of 1000 bytes" in msg
        assert httpx.post(url + CHAT, json=_body(), timeout=60).status_code == 200


def test_over_long_prompt_is_refused_with_the_numbers_not_cut(state):
    limit = prompt_tokens(state, "Who?")
    app = create_app(state, max_prompt_tokens=limit)
    with served(app) as url:
        msg = _err(httpx.post(url + CHAT, json=_body("Who wrote Hamlet? " * 10), timeout=60), 400)
        n = prompt_tokens(state, "Who wrote Hamlet? " * 10)
        assert f"the prompt is {n} tokens, more than the limit of {limit} tokens" in msg and "nothing is truncated" in msg
        assert httpx.post(url + CHAT, json=_body("Who?"), timeout=60).status_code == 200
    app = create_app(state)  # no limit given: the model's context (256) minus max_tokens
    with served(app) as url:
        msg = _err(httpx.post(url + CHAT, json=_body("Who wrote Hamlet? " * 40, max_tokens=100), timeout=60), 400)
        assert "limit of 156 tokens" in msg


@pytest.fixture(scope="module")
def slow_state(tmp_path_factory):
    """A model that never ends on EOS and takes 10 ms per forward call: a request runs for seconds."""
    loaded = make_loaded(eos_bias=-1e4)
    loaded.model.register_forward_pre_hook(lambda module, args: time.sleep(0.01))
    return load_state(write_run(tmp_path_factory.mktemp("slow")), model=loaded)


@pytest.mark.parametrize("stream", [False, True])
def test_disconnect_cancels_the_running_request(slow_state, tmp_path, stream):
    log = tmp_path / "log.jsonl"
    app = create_app(slow_state, request_log=str(log))
    with served(app) as url:
        spy = _Spy(app.state.worker.engine)
        app.state.worker.engine = spy
        body = _body(QUESTIONS[1], max_tokens=200, stream=stream)
        if stream:  # read the first token, then hang up
            with httpx.stream("POST", url + CHAT, json=body, timeout=30) as r:
                next(line for line in r.iter_lines() if '"content"' in line)
        else:
            with pytest.raises(httpx.TimeoutException):
                httpx.post(url + CHAT, json=body, timeout=0.5)
        deadline = time.monotonic() + 60
        while not spy.results and time.monotonic() < deadline:
            time.sleep(0.05)
        (rows,) = spy.results
        assert rows[0]["finish_reason"] == "cancelled" and rows[0]["completion_tokens"] < 150
        assert httpx.post(url + CHAT, json=_body(), timeout=60).status_code == 200
        metrics = httpx.get(url + "/metrics", timeout=30).text
    assert "hneurons_cancelled_total 1" in metrics
    assert any(json.loads(x)["status"] == 499 for x in log.read_text().splitlines())


def test_full_queue_answers_429_with_retry_after(state):
    app = create_app(state, max_queue=1, max_batch=1, batch_wait_s=0.0)
    with served(app) as url:
        spy = _Spy(app.state.worker.engine, hold=True)
        app.state.worker.engine = spy
        with httpx.Client(timeout=60) as c1, httpx.Client(timeout=60) as c2:
            running = threading.Thread(target=c1.post, args=(url + CHAT,), kwargs={"json": _body()})
            running.start()
            assert spy.started.wait(30)  # the worker holds one batch; the queue is empty
            queued = threading.Thread(target=c2.post, args=(url + CHAT,), kwargs={"json": _body()})
            queued.start()
            deadline = time.monotonic() + 30
            while app.state.worker.queue.qsize() < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            r = httpx.post(url + CHAT, json=_body(), timeout=30)
            assert "busy" in _err(r, 429) and int(r.headers["retry-after"]) >= 1
            spy.release.set()
            running.join(60)
            queued.join(60)
        assert httpx.post(url + CHAT, json=_body(), timeout=60).status_code == 200


def test_health_is_503_while_the_model_loads(state):
    go = threading.Event()

    def loader():
        go.wait(60)
        return state

    app = create_app(loader)
    with served(app) as url:
        r = httpx.get(url + "/health", timeout=5)
        assert r.status_code == 503 and r.json()["status"] == "loading"
        assert "loading" in _err(httpx.post(url + CHAT, json=_body(), timeout=5), 503)
        assert "hneurons_model_loaded 0" in httpx.get(url + "/metrics", timeout=5).text
        go.set()
        deadline = time.monotonic() + 30
        while httpx.get(url + "/health", timeout=5).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert httpx.post(url + CHAT, json=_body(), timeout=60).status_code == 200


def test_a_failed_load_is_reported(state):
    def loader():
        raise ConfigError("no such model")

    app = create_app(loader)
    with served(app) as url:
        deadline = time.monotonic() + 10
        while (r := httpx.get(url + "/health", timeout=5)).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.status_code == 500 and "no such model" in r.json()["error"]


def test_every_error_has_the_openai_shape(state):
    app = create_app(state)
    with served(app) as url:
        post = lambda raw: httpx.post(url + CHAT, content=raw, timeout=30)  # noqa: E731
        assert "no route /v1/nothing" in _err(httpx.post(url + "/v1/nothing", json={}, timeout=30), 404)
        assert "GET is not allowed" in _err(httpx.get(url + CHAT, timeout=30), 405)
        assert "nested too deeply" in _err(post(b"[" * 100_000 + b"]" * 100_000), 400)
        assert "not valid JSON" in _err(post(b'{"messages": [], "seed": ' + b"9" * 5000 + b"}"), 400)
        assert "seed" in _err(post(json.dumps(_body(seed=2**70)).encode()), 400)
        assert "n:" in _err(post(json.dumps(_body(n=100)).encode()), 400)
        assert "prompt" in _err(httpx.post(url + "/v1/completions", json={"prompt": " "}, timeout=30), 400)
        assert httpx.post(url + CHAT, json=_body(), timeout=60).status_code == 200


def test_metrics_in_prometheus_text_format(state):
    app = create_app(state)
    with served(app) as url:
        httpx.post(url + CHAT, json=_body(), timeout=60)
        httpx.post(url + CHAT, content=b"{", timeout=30)
        r = httpx.get(url + "/metrics", timeout=30)
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = dict(line.rsplit(" ", 1) for line in r.text.splitlines() if not line.startswith("#"))
    assert samples['hneurons_requests_total{endpoint="chat",status="200"}'] == "1"
    assert samples['hneurons_requests_total{endpoint="chat",status="400"}'] == "1"
    assert int(samples['hneurons_tokens_total{kind="completion"}']) >= 1
    assert samples["hneurons_request_latency_seconds_count"] == "1" and samples["hneurons_model_loaded"] == "1"
    for line in r.text.splitlines():  # every sample's metric has HELP and TYPE lines
        if not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0].removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
            assert f"# TYPE {name} " in r.text, name


def test_options_are_checked(state):
    with pytest.raises(ConfigError, match="max_queue"):
        create_app(state, max_queue=0)
    with pytest.raises(ConfigError, match="options are"):
        create_app(state, frobnicate=1)
    with pytest.raises(ConfigError, match="api-key"):
        create_app(state, api_key=" ")
