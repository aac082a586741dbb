"""hneurons.llm_client: Retry-After, the reply cache, and no credentials from the environment."""

from __future__ import annotations

import time

import pytest

from hneurons.errors import EndpointError
from hneurons.llm_client import RETRY_AFTER_CAP_S, ChatClient, chat_url, prompt_key
from test_judge import _FakeServer


def test_chat_url_accepts_host_or_v1() -> None:
    assert chat_url("http://h:8000") == chat_url("http://h:8000/v1/") == "http://h:8000/v1"


def test_env_credentials_are_never_sent(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-for-another-server")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    srv = _FakeServer(lambda p, n: (200, "ok"))
    try:
        with_key = ChatClient(srv.url, "m", "test", api_key="k", backoff=0)
        without = ChatClient(srv.url, "m", "test", backoff=0)
        assert with_key.complete("hi") == "ok" and without.complete("hi") == "ok"
        assert [r["auth"] for r in srv.requests] == ["Bearer k", "Bearer EMPTY"]
        assert all(r["path"] == "/v1/chat/completions" for r in srv.requests)
        with_key.close()
        without.close()
    finally:
        srv.close()


def test_cache_is_keyed_by_model_and_prompt(tmp_path) -> None:
    srv = _FakeServer(lambda p, n: (200, "x"))
    try:
        a = ChatClient(srv.url, "m1", "test", cache_dir=tmp_path, backoff=0)
        a.remember(prompt_key("p"), "yes")
        assert a.cached(prompt_key("p")) == "yes" and a.cached(prompt_key("q")) is None
        b = ChatClient(srv.url, "m2", "test", cache_dir=tmp_path, backoff=0)
        assert b.cached(prompt_key("p")) is None
        a.close()
        b.close()
        assert len(srv.requests) == 0
    finally:
        srv.close()


def test_wait_honours_retry_after(monkeypatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    srv = _FakeServer(lambda p, n: (200, "x"))
    try:
        c = ChatClient(srv.url, "m", "test", backoff=0.5)
        c.wait(0, "3")  # the server asks for more than the back-off
        c.wait(2, "1")  # the back-off (0.5 * 4) is longer
        c.wait(0, "Wed, 21 Oct 2015 07:28:00 GMT")  # HTTP-date: the back-off
        c.wait(0, "100000")  # capped
        c.close()
    finally:
        srv.close()
    assert slept == [3.0, 2.0, 0.5, RETRY_AFTER_CAP_S]


def test_throttled_then_down(monkeypatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda s: None)
    srv = _FakeServer(lambda p, n: (429, ""))
    try:
        c = ChatClient(srv.url, "m", "test", max_retries=3, backoff=0)
        with pytest.raises(EndpointError, match=r"unreachable after 3 tries \(HTTP 429\)"):
            c.complete("hi")
        assert len(srv.requests) == 3
        c.close()
    finally:
        srv.close()
