"""One chat client for every LLM call hneurons makes (judges, the LLM span locator).

It wraps the OpenAI SDK (any OpenAI-compatible ``/v1/chat/completions`` server: vLLM, llama.cpp,
``hneurons serve``, OpenAI) and adds what the SDK leaves to the caller:

* retries of transient failures (connection errors, timeouts, HTTP 429 and 5xx) with exponential
  back-off, waiting at least what the server's ``Retry-After`` header asks for (capped);
* one :class:`~hneurons.errors.EndpointError` naming the URL when the server stays down or
  refuses the request (HTTP 4xx other than 429), never a traceback;
* an on-disk cache keyed by (endpoint model, sha256(prompt)), so a re-run or a duplicate prompt
  costs no request. Only replies the caller accepted are stored (:meth:`ChatClient.remember`).

Every connection is caller-given: :func:`hneurons.trust.open_endpoint` names it before the first
request and refuses it when the run is offline. Nothing from the environment (``OPENAI_API_KEY``,
``OPENAI_BASE_URL``) is used, so a key meant for one server is never sent to another.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

from hneurons.errors import EndpointError

RETRY_AFTER_CAP_S = 60.0
"""A ``Retry-After`` longer than this is cut to it (a misconfigured server must not hang a run)."""


def prompt_key(prompt: str) -> str:
    """The cache key of a prompt: its sha256 (prompts hold whole responses; keys stay short)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


class ReplyCache:
    """Accepted replies in ``DIR/llm_judge_cache.sqlite3``, keyed by (model, prompt sha256).

    The file name and schema are the ones earlier releases wrote, so old caches stay valid.
    """

    def __init__(self, cache_dir: Path) -> None:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = sqlite3.connect(
            cache_dir / "llm_judge_cache.sqlite3", check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS verdicts (model TEXT, prompt_sha256 TEXT, reply TEXT, "
                         "PRIMARY KEY (model, prompt_sha256))")
        self._db.commit()

    def get(self, model: str, key: str) -> str | None:
        if self._db is None:
            return None
        with self._lock:
            row = self._db.execute("SELECT reply FROM verdicts WHERE model = ? AND prompt_sha256 = ?",
                                   (model, key)).fetchone()
        return row[0] if row else None

    def put(self, model: str, key: str, reply: str) -> None:
        if self._db is None:
            return
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO verdicts (model, prompt_sha256, reply) VALUES (?, ?, ?)",
                             (model, key, reply))
            self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def chat_url(base_url: str) -> str:
    """``http://host:8000`` or ``.../v1`` → the ``.../v1`` base the SDK appends ``/chat/completions`` to."""
    url = base_url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


class ChatClient:
    """Temperature-0 chat completions from one caller-given server and model, retried and cached."""

    def __init__(self, base_url: str, model: str, purpose: str, api_key: str | None = None,
                 cache_dir: Path | None = None, max_retries: int = 5, timeout: float = 30,
                 backoff: float = 1.0) -> None:
        import openai

        from hneurons.trust import open_endpoint

        self.base = chat_url(base_url)
        self.url = self.base + "/chat/completions"
        self.model = model
        open_endpoint(self.url, f"{purpose} (model {model!r})")
        self.max_retries = max(1, max_retries)
        self.backoff = backoff
        self.requests_sent = 0
        # api_key is always passed (never read from OPENAI_API_KEY); "EMPTY" is vLLM's no-key convention.
        self._sdk = openai.OpenAI(base_url=self.base, api_key=api_key or "EMPTY", max_retries=0,
                                  timeout=timeout, organization="", project="")
        self._cache = ReplyCache(cache_dir) if cache_dir is not None else None

    def cached(self, key: str) -> str | None:
        """The stored reply for ``key`` (see :func:`prompt_key`), or None."""
        return self._cache.get(self.model, key) if self._cache is not None else None

    def remember(self, key: str, reply: str) -> None:
        """Store an accepted reply (errors and rejected replies are never stored)."""
        if self._cache is not None:
            self._cache.put(self.model, key, reply)

    def complete(self, prompt: str) -> str:
        """One user-turn completion: the reply text ("" for a malformed body); EndpointError when it fails."""
        import openai

        last = ""
        for attempt in range(self.max_retries):
            self.requests_sent += 1
            try:
                r = self._sdk.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": prompt}], temperature=0)
            except (openai.APIConnectionError, openai.APITimeoutError) as e:
                last = f"{type(e).__name__}: {e}"
            except openai.APIStatusError as e:
                code = e.status_code
                if code != 429 and code < 500:
                    raise EndpointError(
                        f"LLM server at {self.url} answered HTTP {code} ({str(e)[:200]!r}); "
                        f"check the model name {self.model!r} and the API key") from None
                last = f"HTTP {code}"
                self.wait(attempt, e.response.headers.get("retry-after"))
                continue
            except openai.APIResponseValidationError:
                return ""
            else:
                return _reply_text(r)
            self.wait(attempt, None)
        raise EndpointError(
            f"LLM server at {self.url} is unreachable after {self.max_retries} tries ({last}); "
            "start an OpenAI-compatible server there or pass another URL, or use the rule judge")

    def wait(self, attempt: int, retry_after: str | None) -> None:
        """Exponential back-off, but never shorter than the server's Retry-After (seconds form)."""
        delay = self.backoff * (2**attempt) if self.backoff > 0 else 0.0
        try:
            delay = max(delay, min(float(retry_after), RETRY_AFTER_CAP_S)) if retry_after else delay
        except ValueError:  # an HTTP-date: keep the back-off
            pass
        if delay > 0:
            time.sleep(delay)

    def close(self) -> None:
        """Close the HTTP connection pool and the cache."""
        self._sdk.close()
        if self._cache is not None:
            self._cache.close()


def _reply_text(completion: object) -> str:
    """The first choice's text; "" when the server sent no usable choice."""
    try:
        return str(completion.choices[0].message.content or "")  # type: ignore[attr-defined]
    except (AttributeError, IndexError, TypeError):
        return ""
