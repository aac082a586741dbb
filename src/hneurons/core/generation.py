"""The local decode loop (:class:`HFBackend`) and what every sampling backend shares.

Every backend (this one, and the OpenAI/vLLM ones of :mod:`hneurons.core.backends`, picked by
``make_backend``) follows one :class:`Backend` protocol: fully rendered prompt strings in, ``n``
stripped :class:`Generation` objects per prompt out. Prompts are rendered by
:mod:`hneurons.text.prompts`, so the feature pass later sees exactly the tokens the model was
sampled from.

:class:`HFBackend` is the one decode loop of the package: sampling, guarded generation
(:mod:`hneurons.apply.guard`) and the server all run it. What they add is a per-step observer
(:mod:`hneurons.core.steps`), never a copy of the loop.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tqdm.auto import tqdm

from hneurons.core.steps import Rows, StepObserver, draw_tokens, row_generators
from hneurons.errors import ConfigError
from hneurons.text.spans import add_special_tokens_for


@dataclass(frozen=True)
class SamplingParams:
    """Decoding parameters, defaulting to the paper's (arXiv 2512.01797 §6.1.1; 50 new tokens as the official code);
    ``temperature=0`` is greedy."""

    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 0.9
    max_new_tokens: int = 50
    n: int = 1
    seed: int = 0
    stop: tuple[str, ...] = ()  # e.g. ("\n",) for base models (the paper §6.3.1)

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
    finish_reason: str  # "stop" | "length" | "cancelled" (a decode observer stopped the row)


class Backend(Protocol):
    """Anything that turns rendered prompts into ``[len(prompts)][params.n]`` generations."""

    name: str

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, progress: bool = True
    ) -> list[list[Generation]]: ...


# a shorter common prefix is not worth a second forward call
_MIN_SHARED_PREFIX = 8


def cut_at_stop(text: str, stop: tuple[str, ...]) -> int | None:
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
    distributionally the same as the official ``collect_responses.py``'s ``n`` separate calls.

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
    call included: this is the plain forward. Callers that act while it decodes (guarded
    generation, a streaming server) pass a per-step observer to :meth:`decode`
    (:mod:`hneurons.core.steps`). Measured faster than ``generate`` on these workloads
    (``benchmarks/sampling.py``), which is why the package keeps its own loop.
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
        # some model families name the cache argument ``cache``; a few forwards take no logits_to_keep
        accepted = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in accepted else "past_key_values"
        self._keep_logits = "logits_to_keep" in accepted
        self.share_prefix = share_prefix and self._plain_cache()

    def encode(self, prompt: str) -> list[int]:
        """A rendered prompt's token ids as :meth:`generate` feeds them (for :meth:`decode` callers)."""
        add = add_special_tokens_for(self.tokenizer, prompt)
        return self.tokenizer(prompt, add_special_tokens=add)["input_ids"]

    def _finish(self, ids: list[int], params: SamplingParams, reason: str) -> Generation:
        """Decode a finished row; cut text and ids at the first stop string."""
        decode = lambda x: self.tokenizer.decode(x, skip_special_tokens=True)  # noqa: E731
        text = decode(ids)
        cut = cut_at_stop(text, params.stop)
        if cut is not None:
            text, reason = text[:cut], "stop"
            # keep the tokens that lie wholly before the stop string
            k = 0
            while k < len(ids) and cut_at_stop(decode(ids[: k + 1]), params.stop) is None:
                k += 1
            ids = ids[:k]
        return Generation(text.strip(), tuple(ids), reason)

    def _forward(self, input_ids: Any, attention: Any, positions: Any, cache: Any) -> Any:
        kwargs = {self._cache_kw: cache, "use_cache": True}
        if self._keep_logits:
            kwargs["logits_to_keep"] = 1
        out = self.model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, **kwargs
        )
        return out.logits[:, -1, :].float()

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

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        # with the config, layers of sliding-window models get their own (windowed) cache type
        return DynamicCache(config=self.model.config)

    def _consume(self, nxt: Any, eos: Any, params: SamplingParams, rows: Rows) -> list[int | None]:
        """Append one decoded step to each live row; end rows that hit eos or a stop string.

        Returns, per batch position, the token the row kept (None: finished earlier or ended on eos).
        """
        import torch

        ended = torch.isin(nxt, eos).tolist()
        values = nxt.tolist()
        kept: list[int | None] = [None] * len(rows.order)
        for b, r in enumerate(rows.order):
            if not rows.live[b]:
                continue
            if ended[b]:
                rows.end(b, "stop")
                continue
            rows.tokens[r].append(values[b])
            kept[b] = values[b]
            if params.stop and cut_at_stop(
                self.tokenizer.decode(rows.tokens[r], skip_special_tokens=True), params.stop
            ) is not None:
                rows.end(b, "stop")
        return kept

    @staticmethod
    def _drop_finished(cache: Any, rows: Rows, attention: Any, last_pos: Any, nxt: Any) -> tuple[Any, Any, Any]:
        """Remove finished rows from the batch and the KV cache (their outputs are already final)."""
        import torch

        keep = torch.tensor(rows.keep_live(), device=attention.device)
        cache.batch_select_indices(keep)
        return attention[keep], last_pos[keep], nxt[keep]

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

    def _run_batch(self, prompts: list[list[int]], seeds: list[int], ids: list[int], params: SamplingParams,
                   observer: StepObserver | None, feed_last: bool) -> list[Generation]:
        """Decode one left-padded batch; finished rows leave the batch when ``trim_finished``.

        ``ids`` are the rows' indices in the :meth:`decode` call (what the observer is told).
        """
        import torch

        device = next(self.model.parameters()).device
        generators = row_generators(seeds, device)
        logits, attention, last_pos, cache = self._prefill(prompts, device)
        rows = Rows(ids)
        eos = torch.tensor(sorted(self.eos_ids), device=device)
        last = params.max_new_tokens - 1
        for step in range(params.max_new_tokens):
            # finished rows draw too when not trimmed; per-row generators keep live rows' streams
            nxt = draw_tokens(logits, params, [generators[r] for r in rows.order])
            kept = self._consume(nxt, eos, params, rows)
            if observer is not None:
                rows.notify(observer, step, kept, final=step == last)
            if not any(rows.live) or (step == last and not feed_last):
                break
            if self.trim_finished and not all(rows.live):
                attention, last_pos, nxt = self._drop_finished(cache, rows, attention, last_pos, nxt)
            elif not all(rows.live):
                dead = torch.tensor([not alive for alive in rows.live], device=device)
                nxt = nxt.masked_fill(dead, self.pad_id)  # like generate: finished rows get padding
            attention = torch.cat([attention, attention.new_ones((len(attention), 1))], dim=1)
            last_pos = last_pos + 1
            logits = self._forward(nxt[:, None], attention, last_pos[:, None], cache)
            if step == last and observer is not None:  # feed_last: the length-cut rows' last tokens went in
                rows.notify(observer, step + 1, [None] * len(rows.order), final=True)
        return [self._finish(rows.tokens[r], params, rows.reasons[r]) for r in range(len(prompts))]

    def decode(self, prompts: Sequence[Sequence[int]], seeds: Sequence[int], params: SamplingParams, *,
               observer: StepObserver | None = None, feed_last: bool = False,
               progress: bool = False) -> list[Generation]:
        """One generation per token-id prompt (a row each, ``params.n`` ignored), in input order.

        Rows are batched by length (:func:`length_batches`) and each draws from its own generator
        seeded by ``seeds[row]``. ``observer`` sees every step (:class:`DecodeStep`; rows are indices
        into ``prompts``) and may stop rows. ``feed_last``: rows cut by the length limit never feed
        their last token to the model; one more forward does, so hooks that read activations (guarded
        generation) see every generated token once.
        """
        import torch

        if len(seeds) != len(prompts):
            raise ConfigError(f"{len(seeds)} seeds for {len(prompts)} prompts; give one seed per row")
        out: list[Generation | None] = [None] * len(prompts)
        bar = tqdm(total=len(prompts), desc="sampling", unit="resp", disable=None if progress else True)
        with torch.inference_mode():
            for part in length_batches([len(p) for p in prompts], self.batch_size, self.max_batch_tokens):
                gens = self._run_batch([list(prompts[i]) for i in part], [seeds[i] for i in part], part, params,
                                       observer, feed_last)
                for i, gen in zip(part, gens):
                    out[i] = gen
                bar.update(len(part))
        bar.close()
        return out  # type: ignore[return-value]

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, progress: bool = True
    ) -> list[list[Generation]]:
        """``params.n`` generations per rendered prompt; row (i, j) is seeded by ``(params.seed, i, j)``."""
        encoded = [self.encode(p) for p in prompts]
        if any(not ids for ids in encoded):
            raise ConfigError("an empty prompt was given to the sampler; every prompt needs text")
        rows = [(i, j) for i in range(len(prompts)) for j in range(params.n)]
        gens = self.decode([encoded[i] for i, _ in rows], [row_seed(params.seed, i, j) for i, j in rows], params,
                           progress=progress)
        out: list[list[Generation]] = [[] for _ in prompts]
        for (i, _), gen in zip(rows, gens):
            out[i].append(gen)
        return out
