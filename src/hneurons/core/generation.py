"""Sampling backends behind one interface: local HF ``generate``, an OpenAI-compatible server, vLLM.

Which backend samples the responses is a configuration choice (``make_backend(name, ...)``); every
stage sees the same :class:`Backend` protocol: fully rendered prompt strings in, ``n`` stripped
:class:`Generation` objects per prompt out. Prompts are rendered by :mod:`hneurons.text.spans` so the
feature pass later sees exactly the tokens the model was sampled from.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tqdm.auto import tqdm

from hneurons.errors import ConfigError, EndpointError
from hneurons.text.spans import add_special_tokens_for


@dataclass(frozen=True)
class SamplingParams:
    """Decoding parameters, defaulting to the paper's (PAPER.md §2.3); ``temperature=0`` is greedy."""

    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 0.9
    max_new_tokens: int = 50
    n: int = 1
    seed: int = 0
    stop: tuple[str, ...] = ()  # e.g. ("\n",) for base models (PAPER.md §7.1)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.max_new_tokens < 1 or self.n < 1:
            raise ConfigError(
                "top_k must be >= 0, max_new_tokens >= 1 and n >= 1, got "
                f"top_k={self.top_k}, max_new_tokens={self.max_new_tokens}, n={self.n}"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Generation:
    """One sampled response: stripped text, the generated token ids (no eos/pad), why it ended."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str  # "stop" | "length"


class Backend(Protocol):
    """Anything that turns rendered prompts into ``[len(prompts)][params.n]`` generations."""

    name: str

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, progress: bool = True
    ) -> list[list[Generation]]: ...


# a shorter common prefix is not worth a second forward call
_MIN_SHARED_PREFIX = 8


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> int | None:
    """Index of the earliest stop string in ``text`` after its leading whitespace (None: none).

    Stops only count once the response has begun: a model often opens with a newline and then
    answers (base models after ``Answer:`` nearly always do), so ``stop=("\\n",)`` must end the
    answer's line, not the empty line before it.
    """
    start = len(text) - len(text.lstrip())
    hits = [i for i in (text.find(s, start) for s in stop if s) if i >= 0]
    return min(hits) if hits else None


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Indices, longest first, in batches of ≤ ``batch_size`` items and ≤ ``max_tokens`` padded tokens.

    A batch is as wide as its longest item, so sorting by length and capping padded tokens keeps a
    few long sequences from padding many short ones; a single item longer than the cap still
    forms a batch of its own. Shared by sampling (prompts) and feature extraction (sequences).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        cur = batches[-1] if batches else None
        if cur is None or len(cur) >= batch_size or lengths[cur[0]] * (len(cur) + 1) > max_tokens:
            batches.append([i])
        else:
            cur.append(i)
    return batches


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """The seed of one response: fixed by (run seed, prompt, sample), whatever the batching."""
    digest = hashlib.blake2b(f"{seed}/{prompt_index}/{sample_index}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


class HFBackend:
    """Batched sampling on a local Hugging Face causal LM with a KV-cached decoding loop.

    Rows (prompt × sample) are sorted by prompt length so a batch carries little padding, left
    padded, and put back in input order. The ``n`` samples of a prompt are repeated rows, which is
    distributionally the same as the official code's ``n`` separate calls (PAPER.md §2.3).

    Why not ``model.generate``: a batch of ``generate`` runs until its longest row ends and keeps
    computing the finished rows; with responses of very different lengths (short answers next to
    ramblers that hit the cap) most of the work is wasted, and ``n`` samples of a prompt pay ``n``
    prefills of the same (system-prompt heavy) text. On a CPU the prompt, not the answer, is most
    of the work (a 55-token chat prompt costs as much as 30 decode steps of its batch), so this loop

    * cuts batches by padded prompt tokens (``max_batch_tokens``) as well as rows: prompts are sorted
      longest first, so a few long prompts (jailbreak templates of 1,600 tokens) no longer pad a
      batch of short ones to their width;
    * prefills the prompt prefix all rows of a batch share (the chat template's system turn) once,
      for a batch of one, and the rest of each distinct prompt after it (``share_prefix``; only
      for models whose cache is plain per-layer tensors, see :meth:`_plain_cache`), then copies
      each prompt's cache to its sample rows;
    * drops finished rows from the batch and the cache (``trim_finished``);
    * draws every row's tokens from its own generator seeded by ``(seed, prompt index, sample
      index)``, so a response does not depend on which other prompts share its batch (a resumed
      run re-creates the same samples).

    Batch shape changes the bf16 rounding of a row's logits, so prefix sharing and the batch cut
    can flip a near-tied token; ``benchmarks/agreement.py`` measures how often on fixed questions.
    Sampling applies temperature, then top-k, then top-p, in the order ``generate`` uses. Forward
    hooks registered on the model (neuron scaling, feature capture) act on every call, the prefix
    call included: this is the plain forward.
    """

    name = "hf"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 64,
        trim_finished: bool = True,
        share_prefix: bool = True,
        max_batch_tokens: int = 8192,
    ) -> None:
        import inspect

        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if max_batch_tokens < 1:
            raise ConfigError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.trim_finished = trim_finished
        self.max_batch_tokens = max_batch_tokens
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = tokenizer.eos_token_id
        if self.pad_id is None:
            raise ConfigError("the tokenizer has neither a pad nor an eos token; cannot batch")
        eos: set[int] = set()
        config = getattr(model, "generation_config", None)
        for source in (tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
            if isinstance(source, int):
                eos.add(source)
            elif source:
                eos.update(int(s) for s in source)
        if not eos:
            raise ConfigError("neither the tokenizer nor the model defines an eos token")
        self.eos_ids = eos
        # transformers renamed these keywords across versions; ask the forward which it takes
        accepted = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in accepted else "past_key_values"
        self._keep_kw = next(
            (k for k in ("logits_to_keep", "num_logits_to_keep") if k in accepted), None
        )
        self.share_prefix = share_prefix and self._plain_cache()

    def _encode(self, prompt: str) -> list[int]:
        add = add_special_tokens_for(self.tokenizer, prompt)
        return self.tokenizer(prompt, add_special_tokens=add)["input_ids"]

    def _finish(self, ids: list[int], params: SamplingParams, reason: str) -> Generation:
        """Decode a finished row; cut text and ids at the first stop string."""
        decode = lambda x: self.tokenizer.decode(x, skip_special_tokens=True)  # noqa: E731
        text = decode(ids)
        cut = _cut_at_stop(text, params.stop)
        if cut is not None:
            text, reason = text[:cut], "stop"
            # keep the tokens that lie wholly before the stop string
            k = 0
            while k < len(ids) and _cut_at_stop(decode(ids[: k + 1]), params.stop) is None:
                k += 1
            ids = ids[:k]
        return Generation(text.strip(), tuple(ids), reason)

    def _forward(self, input_ids: Any, attention: Any, positions: Any, cache: Any) -> Any:
        kwargs = {self._cache_kw: cache, "use_cache": True}
        if self._keep_kw:
            kwargs[self._keep_kw] = 1
        out = self.model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, **kwargs
        )
        return out.logits[:, -1, :].float()

    def _next_tokens(self, logits: Any, params: SamplingParams, generators: list[Any]) -> Any:
        import torch
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        if params.greedy:
            return logits.argmax(-1)
        # transformers' own warpers in generate's order (temperature, top-k, top-p). Top-k is
        # applied by keeping the k best logits, so top-p, softmax and the noise work on k entries
        # instead of the whole vocabulary (same distribution, barring ties at the k-th logit).
        logits = TemperatureLogitsWarper(params.temperature)(None, logits)
        candidates = None
        if params.top_k and params.top_k < logits.shape[-1]:
            logits, candidates = torch.topk(logits, params.top_k, dim=-1)
        if params.top_p < 1.0:
            logits = TopPLogitsWarper(params.top_p)(None, logits)
        probs = logits.softmax(-1)
        # exponential-race sampling with one generator per row: argmax(p / E), E ~ Exp(1)
        width = probs.shape[-1]
        noise = torch.stack(
            [torch.empty(width, device=probs.device).exponential_(generator=g) for g in generators]
        )
        choice = (probs / noise).argmax(-1)
        if candidates is None:
            return choice
        return candidates.gather(-1, choice[:, None])[:, 0]

    def _left_padded(self, prompts: Sequence[Sequence[int]], device: Any) -> tuple[Any, Any, Any]:
        """Left-padded ids, attention mask and position ids (pads do not advance positions)."""
        import torch

        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, ids in enumerate(prompts):
            input_ids[r, width - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
            attention[r, width - len(ids) :] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        return input_ids, attention, (attention.cumsum(-1) - 1).clamp(min=0)

    @staticmethod
    def _generators(seeds: Sequence[int], device: Any) -> list[Any]:
        """One seeded generator per row, so a row's samples do not depend on its batch."""
        import torch

        out = []
        for seed in seeds:
            g = torch.Generator(device=device)
            g.manual_seed(seed)
            out.append(g)
        return out

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.model.config)
        except TypeError:  # older transformers
            return DynamicCache()

    def _consume(self, nxt: Any, eos: Any, params: SamplingParams, order: list[int], live: list[bool],
                 tokens: list[list[int]], reasons: list[str]) -> None:
        """Append one decoded step to each live row; mark rows that hit eos or a stop string."""
        import torch

        ended = torch.isin(nxt, eos).tolist()
        values = nxt.tolist()
        for b, r in enumerate(order):
            if not live[b]:
                continue
            if ended[b]:
                live[b], reasons[r] = False, "stop"
                continue
            tokens[r].append(values[b])
            if params.stop and _cut_at_stop(
                self.tokenizer.decode(tokens[r], skip_special_tokens=True), params.stop
            ) is not None:
                live[b], reasons[r] = False, "stop"

    @staticmethod
    def _drop_finished(cache: Any, live: list[bool], order: list[int], attention: Any, last_pos: Any,
                       nxt: Any) -> tuple[Any, Any, Any, list[int], list[bool]]:
        """Remove finished rows from the batch and the KV cache (their outputs are already final)."""
        import torch

        keep = torch.tensor([b for b, alive in enumerate(live) if alive], device=attention.device)
        cache.batch_select_indices(keep)
        order = [order[b] for b in keep.tolist()]
        return attention[keep], last_pos[keep], nxt[keep], order, [True] * len(order)

    def _plain_cache(self) -> bool:
        """Whether this model's KV cache is one plain growing tensor per layer.

        Sliding-window or other special layers keep extra state that a prefix computed apart
        cannot be spliced into, so those models prefill whole prompts.
        """
        from transformers.cache_utils import DynamicLayer

        layers = getattr(self._new_cache(), "layers", None)
        return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)

    def _prefill(self, prompts: list[list[int]], device: Any) -> tuple[Any, Any, Any, Any]:
        """Prefill each distinct prompt once (their shared prefix once in all) and copy its cache to its rows.

        The shared prefix is run for one row and its cache repeated; the prompts' remainders follow
        left-padded, so the attention mask is ``[prefix ones][padding zeros][remainder ones]`` and
        positions continue from the prefix. Returns the rows' last logits, attention mask, last
        positions and the KV cache.
        """
        import torch

        unique: dict[tuple[int, ...], int] = {}
        for ids in prompts:
            unique.setdefault(tuple(ids), len(unique))
        distinct = list(unique)
        expand = torch.tensor([unique[tuple(ids)] for ids in prompts], device=device)
        cache = self._new_cache()
        # every prompt keeps at least one token of its own, whose logits start the answer
        shared = len(os.path.commonprefix(distinct)) if len(distinct) > 1 and self.share_prefix else 0
        shared = min(shared, min(len(p) for p in distinct) - 1)
        if shared >= _MIN_SHARED_PREFIX:
            head = torch.tensor([distinct[0][:shared]], device=device)
            ones = torch.ones_like(head)
            self._forward(head, ones, (ones.cumsum(-1) - 1), cache)
            cache.batch_select_indices(torch.zeros(len(distinct), dtype=torch.long, device=device))
            input_ids, tail_mask, tail_pos = self._left_padded([p[shared:] for p in distinct], device)
            attention = torch.cat([ones.expand(len(distinct), -1), tail_mask], dim=1)
            positions = tail_pos + shared
        else:
            input_ids, attention, positions = self._left_padded(distinct, device)
        logits = self._forward(input_ids, attention, positions, cache)
        if len(distinct) < len(prompts):
            cache.batch_select_indices(expand)
        return logits[expand], attention[expand], positions[expand][:, -1], cache

    def _run_batch(
        self, prompts: list[list[int]], seeds: list[int], params: SamplingParams
    ) -> list[Generation]:
        """Decode one left-padded batch; finished rows leave the batch when ``trim_finished``."""
        import torch

        device = next(self.model.parameters()).device
        rows = len(prompts)
        generators = self._generators(seeds, device)
        logits, attention, last_pos, cache = self._prefill(prompts, device)
        order = list(range(rows))  # batch position -> row (shrinks only when trimming)
        live = [True] * rows  # per batch position: still generating
        tokens: list[list[int]] = [[] for _ in range(rows)]
        reasons = ["length"] * rows
        eos = torch.tensor(sorted(self.eos_ids), device=device)
        for step in range(params.max_new_tokens):
            # finished rows draw too when not trimmed; per-row generators keep live rows' streams
            nxt = self._next_tokens(logits, params, [generators[r] for r in order])
            self._consume(nxt, eos, params, order, live, tokens, reasons)
            if not any(live) or step == params.max_new_tokens - 1:
                break
            if self.trim_finished and not all(live):
                attention, last_pos, nxt, order, live = self._drop_finished(cache, live, order, attention, last_pos, nxt)
            elif not all(live):
                dead = torch.tensor([not alive for alive in live], device=device)
                nxt = nxt.masked_fill(dead, self.pad_id)  # like generate: finished rows get padding
            attention = torch.cat([attention, attention.new_ones((len(attention), 1))], dim=1)
            last_pos = last_pos + 1
            logits = self._forward(nxt[:, None], attention, last_pos[:, None], cache)
        return [self._finish(tokens[r], params, reasons[r]) for r in range(rows)]

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, progress: bool = True
    ) -> list[list[Generation]]:
        import torch

        encoded = [self._encode(p) for p in prompts]
        if any(not ids for ids in encoded):
            raise ConfigError("an empty prompt was given to the sampler; every prompt needs text")
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        rows = [(i, j) for i in order for j in range(params.n)]
        seeds = [row_seed(params.seed, i, j) for i, j in rows]
        out: list[list[Generation | None]] = [[None] * params.n for _ in prompts]
        bar = tqdm(total=len(rows), desc="sampling", unit="resp", disable=not progress)
        with torch.inference_mode():
            gens = []
            for part in length_batches([len(encoded[i]) for i, _ in rows], self.batch_size, self.max_batch_tokens):
                gens += self._run_batch([encoded[rows[b][0]] for b in part], [seeds[b] for b in part], params)
                bar.update(len(part))
        for (i, j), gen in zip(rows, gens):
            out[i][j] = gen
        bar.close()
        return out  # type: ignore[return-value]

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
            cut = _cut_at_stop(text, params.stop)
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
            bar = tqdm(total=len(prompts), desc="sampling", unit="prompt", disable=not progress)
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


_BACKENDS = {"hf": HFBackend, "openai": OpenAIBackend, "vllm": VLLMBackend}


def make_backend(name: str, **kwargs: Any) -> Backend:
    """Build the sampling backend named in the config (``hf`` | ``openai`` | ``vllm``)."""
    try:
        cls = _BACKENDS[name]
    except KeyError:
        raise ConfigError(
            f"unknown sampling backend {name!r}; choose one of {', '.join(sorted(_BACKENDS))}"
        ) from None
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"bad options for the {name!r} sampling backend: {e}") from None
