"""The sampling backends other than the local decode loop, and the registry that picks one by name.

Which backend samples the responses is a configuration choice (``responses.backend``, built by
:func:`make_backend`); every stage sees the same :class:`~hneurons.core.generation.Backend`
protocol: fully rendered prompt strings in, ``n`` stripped generations per prompt out.
:class:`OpenAIBackend` sends them to any OpenAI-compatible ``/v1/completions`` server and
:class:`VLLMBackend` to an in-process vLLM engine; :class:`~hneurons.core.generation.HFBackend`
(the local loop, with per-step observers) lives in :mod:`hneurons.core.generation`.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

from hneurons.core.generation import Backend, Generation, HFBackend, SamplingParams, cut_at_stop, row_seed
from hneurons.errors import ConfigError, EndpointError


class OpenAIBackend:
    """Sampling through any OpenAI-compatible ``/v1/completions`` server (vLLM, llama.cpp, TGI…).

    Prompts are sent already rendered (the completions endpoint, not chat), so the server must
    not re-apply a template. ``top_k`` and ``seed`` are sent as the extra fields vLLM accepts;
    servers that reject them can be given ``send_top_k=False``.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        retries: int = 2,
        send_top_k: bool = True,
    ) -> None:
        import httpx

        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.url = base_url.rstrip("/") + ("" if base_url.rstrip("/").endswith("/v1") else "/v1")
        self.url += "/completions"
        self.model = model
        from hneurons.trust import open_endpoint

        open_endpoint(self.url, f"sampling backend (model {model!r}; the prompts are sent)")
        self.max_concurrency = max_concurrency
        self.retries = retries
        self.send_top_k = send_top_k
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout_s)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def _payload(self, prompt: str, params: SamplingParams, index: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "n": params.n,
            "seed": row_seed(params.seed, index, 0) % (2**31 - 1),
        }
        if not params.greedy:
            body["top_p"] = params.top_p
            if self.send_top_k and params.top_k:
                body["top_k"] = params.top_k
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    def _post(self, body: dict[str, Any]) -> Any:
        import httpx

        for attempt in range(self.retries + 1):
            try:
                response = self._client.post(self.url, json=body)
            except httpx.ConnectError as e:
                raise EndpointError(
                    f"cannot reach the completions server at {self.url} ({e}); start it or fix "
                    "the backend's base_url"
                ) from None
            except httpx.TimeoutException:
                if attempt == self.retries:
                    raise EndpointError(
                        f"the completions server at {self.url} timed out {self.retries + 1} "
                        "times; check that it is running or raise timeout_s"
                    ) from None
                continue
            if response.status_code == 429 or response.status_code >= 500:
                if attempt < self.retries:
                    time.sleep(0.5 * 2**attempt)
                    continue
            if response.status_code >= 400:
                raise EndpointError(
                    f"{self.url} answered HTTP {response.status_code}: {response.text[:200]!r}; "
                    "check the model name and sampling options"
                )
            try:
                return response.json()
            except ValueError:
                raise EndpointError(
                    f"{self.url} answered non-JSON ({response.text[:80]!r}); is base_url an "
                    "OpenAI-compatible server?"
                ) from None
        raise AssertionError("unreachable")

    def _one(self, prompt: str, params: SamplingParams, index: int) -> list[Generation]:
        data = self._post(self._payload(prompt, params, index))
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or len(choices) != params.n:
            raise EndpointError(
                f"{self.url} answered without a 'choices' list of {params.n} entries "
                f"(got {str(data)[:120]!r})"
            )
        choices = sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)
        out = []
        for k, choice in enumerate(choices):
            text = choice.get("text") if isinstance(choice, dict) else None
            if not isinstance(text, str):
                raise EndpointError(f"{self.url} answered without a string 'choices[{k}].text'")
            reason = "length" if choice.get("finish_reason") == "length" else "stop"
            cut = cut_at_stop(text, params.stop)
            if cut is not None:
                text, reason = text[:cut], "stop"
            out.append(Generation(text.strip(), (), reason))
        return out

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, progress: bool = True
    ) -> list[list[Generation]]:
        out: list[list[Generation]] = [[] for _ in prompts]
        with concurrent.futures.ThreadPoolExecutor(self.max_concurrency) as pool:
            futures = {pool.submit(self._one, p, params, i): i for i, p in enumerate(prompts)}
            bar = tqdm(total=len(prompts), desc="sampling", unit="prompt", disable=None if progress else True)
            try:
                for fut in concurrent.futures.as_completed(futures):
                    out[futures[fut]] = fut.result()
                    bar.update(1)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
            finally:
                bar.close()
        return out


class VLLMBackend:
    """Sampling with an in-process vLLM engine (GPU machines; optional dependency)."""

    name = "vllm"

    def __init__(self, model: str, **engine_kwargs: Any) -> None:
        try:
            import vllm
        except ImportError:
            raise ConfigError(
                "the vllm backend needs vLLM: pip install hneurons[vllm] (GPU only), or use "
                'backend = "hf"'
            ) from None
        self._vllm = vllm
        self.llm = vllm.LLM(model=model, **engine_kwargs)

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, progress: bool = True
    ) -> list[list[Generation]]:
        sp = self._vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_k=params.top_k if params.top_k and not params.greedy else -1,
            top_p=1.0 if params.greedy else params.top_p,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
            stop=list(params.stop) or None,
        )
        results = self.llm.generate(list(prompts), sp, use_tqdm=progress)
        return [
            [
                Generation(
                    c.text.strip(),
                    tuple(c.token_ids),
                    "length" if c.finish_reason == "length" else "stop",
                )
                for c in r.outputs
            ]
            for r in results
        ]


BACKENDS: dict[str, Callable[..., Backend]] = {"hf": HFBackend, "openai": OpenAIBackend, "vllm": VLLMBackend}
"""The sampling backends by the name ``responses.backend`` gives (one row per backend)."""


def make_backend(name: str, **kwargs: Any) -> Backend:
    """Build the sampling backend named in the config (one of :data:`BACKENDS`) with its options."""
    try:
        cls = BACKENDS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown sampling backend {name!r}; choose one of {', '.join(BACKENDS)}") from None
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"bad options for the {name!r} sampling backend: {e}") from None
