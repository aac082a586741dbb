"""Where the α sweep generates: the local hook engine, or servers of edited checkpoints.

``intervene.backend`` picks one (:data:`ENGINES`):

* ``hf`` — the local model under forward hooks (or the reversible weight edit); the default.
* ``openai`` — caller-started OpenAI-compatible ``/v1/completions`` servers, one per (condition, α),
  each serving a checkpoint written by ``hneurons edit-model`` (vLLM with tensor parallelism,
  llama.cpp, TGI …). ``intervene.backend_url`` names them with ``{alpha}`` (α as ``%g`` prints it)
  and ``{condition}`` (``H``, ``random_0`` …); α = 1 is the unedited model at ``{alpha}`` = 1.
* ``vllm`` — an in-process vLLM engine (tensor parallel over every visible GPU) whose ``W_down``
  columns are scaled in place for each (condition, α) through ``LLM.apply_model`` and restored
  after; in-place edits reach captured CUDA graphs, which read the same memory. **Unverified**:
  written against vLLM's documented ``LLM.apply_model`` and its row-parallel ``down_proj``
  (``input_size_per_partition`` columns per tensor-parallel rank) for dense models whose layers
  are ``model.model.layers[i].mlp.down_proj``; no GPU run of it has been made.

The sweep itself is unchanged: a :data:`~hneurons.intervention.sweep.Scaler` context that, for
a served engine, switches the endpoint generations go to instead of editing the local model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from hneurons.core.generation import Generation, SamplingParams
from hneurons.errors import ConfigError
from hneurons.intervention.sweep import Scaler, make_generate_fn, make_scaler
from hneurons.intervention.tasks import GenerateFn
from hneurons.text.prompts import Conversation
from hneurons.text.prompts import render_conversation

ENGINES = ("hf", "openai", "vllm")
"""The values ``intervene.backend`` accepts."""


def endpoint_url(template: str, condition: str, alpha: float) -> str:
    """``intervene.backend_url`` for one (condition, α): ``{condition}`` and ``{alpha}`` filled in."""
    return template.replace("{condition}", condition).replace("{alpha}", f"{float(alpha):g}")


def check_engine(icfg: Any, n_conditions: int) -> None:
    """Reject an unusable ``intervene.backend`` setting before anything is generated."""
    backend = getattr(icfg, "backend", "hf")
    if backend not in ENGINES:
        raise ConfigError(f"intervene.backend = {backend!r}; choose one of {', '.join(ENGINES)}")
    if backend == "openai":
        url = icfg.backend_url or ""
        if not url or not icfg.backend_model:
            raise ConfigError("intervene.backend = openai needs intervene.backend_url (with {alpha}) and "
                              "intervene.backend_model")
        if "{alpha}" not in url:
            raise ConfigError(f"intervene.backend_url {url!r} has no {{alpha}}: each α needs its own server of an "
                              "edited checkpoint (hneurons edit-model)")
        if n_conditions > 1 and "{condition}" not in url:
            raise ConfigError(f"intervene.backend_url {url!r} has no {{condition}} but the sweep has "
                              f"{n_conditions} neuron sets; add {{condition}} or set intervene.random_seeds = 0")


def make_engine(icfg: Any, loaded: Any, chat: bool, batch_size: int,
                conditions: Mapping[str, np.ndarray]) -> tuple[GenerateFn, Scaler]:
    """``(generate, scaler)`` for the sweep on the configured engine (see the module docstring)."""
    check_engine(icfg, len(conditions))
    backend = getattr(icfg, "backend", "hf")
    if backend == "hf":
        return make_generate_fn(loaded.model, loaded.tokenizer, chat, batch_size), make_scaler(loaded.layout, icfg.method)
    if backend == "vllm":
        return vllm_engine(str(loaded.source), loaded.tokenizer, chat, loaded.layout.d_ff)
    return served_engine(icfg.backend_url, icfg.backend_model, loaded.tokenizer, chat, conditions)


def served_engine(url: str, model: str, tokenizer: Any, chat: bool,
                  conditions: Mapping[str, np.ndarray]) -> tuple[GenerateFn, Scaler]:
    """Generation through the server of each (condition, α); the scaler picks the server."""
    from hneurons.core.backends import OpenAIBackend

    names = {tuple(np.asarray(v).tolist()): c for c, v in conditions.items()}
    first = next(iter(conditions))
    clients: dict[str, OpenAIBackend] = {}

    def client(condition: str, alpha: float) -> OpenAIBackend:
        target = endpoint_url(url, condition, alpha)
        if target not in clients:
            clients[target] = OpenAIBackend(target, model)
        return clients[target]

    state = {"backend": None}

    def generate(convs: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
        if not convs:
            return []
        backend = state["backend"] or client(first, 1.0)  # outside a scaler: the unedited model
        prompts = [render_conversation(tokenizer, c, chat) for c in convs]
        return [g[0] for g in backend.generate(prompts, params, progress=False)]

    @contextlib.contextmanager
    def scaler(neurons: np.ndarray, alpha: float) -> Iterator[None]:
        key = tuple(np.asarray(neurons).tolist())
        if key not in names:
            raise ConfigError("the served engine has no server for this neuron set; it knows "
                              + ", ".join(conditions))
        before, state["backend"] = state["backend"], client(names[key], alpha)
        try:
            yield
        finally:
            state["backend"] = before

    return generate, scaler


def vllm_engine(source: str, tokenizer: Any, chat: bool, d_ff: int) -> tuple[GenerateFn, Scaler]:
    """Generation on an in-process vLLM engine whose W_down columns the scaler edits in place (unverified)."""
    import torch

    from hneurons.core.backends import VLLMBackend

    backend = VLLMBackend(source, tensor_parallel_size=max(1, torch.cuda.device_count()))

    def generate(convs: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
        if not convs:
            return []
        prompts = [render_conversation(tokenizer, c, chat) for c in convs]
        return [g[0] for g in backend.generate(prompts, params, progress=False)]

    @contextlib.contextmanager
    def scaler(neurons: np.ndarray, alpha: float) -> Iterator[None]:
        grouped: dict[int, list[int]] = {}
        for n in np.asarray(neurons).tolist():
            grouped.setdefault(int(n) // d_ff, []).append(int(n) % d_ff)
        backend.llm.apply_model(_VLLMColumns(grouped, float(alpha)))
        try:
            yield
        finally:
            backend.llm.apply_model(_VLLMColumns(grouped, None))

    return generate, scaler


class _VLLMColumns:
    """Picklable edit run inside each vLLM worker: scale (``alpha``) or restore (None) W_down columns.

    vLLM's ``down_proj`` is row parallel: tensor-parallel rank r holds input columns
    ``[r * n, (r + 1) * n)`` with ``n = input_size_per_partition``; the originals are kept on the
    module so the restore is exact.
    """

    def __init__(self, grouped: dict[int, list[int]], alpha: float | None) -> None:
        self.grouped, self.alpha = grouped, alpha

    def __call__(self, model: Any) -> int:
        import torch
        from vllm.distributed import get_tensor_model_parallel_rank

        rank = get_tensor_model_parallel_rank()
        edited = 0
        for layer, cols in self.grouped.items():
            down = model.model.layers[layer].mlp.down_proj
            n = int(down.input_size_per_partition)
            local = [j - rank * n for j in cols if rank * n <= j < (rank + 1) * n]
            if not local:
                continue
            w = down.weight  # [hidden, n]
            with torch.no_grad():
                if self.alpha is None:
                    index, saved = down._hneurons_saved
                    w.index_copy_(1, index, saved)
                    del down._hneurons_saved
                else:
                    index = torch.tensor(local, device=w.device)
                    saved = w.index_select(1, index).clone()
                    down._hneurons_saved = (index, saved)
                    w.index_copy_(1, index, saved * self.alpha)
            edited += len(local)
        return edited
