"""The α sweep: generate and judge every (benchmark, condition, α, item), resumably.

Model-free by design: :func:`sweep` takes a generate function and a scaler, so tests can fake
both, and the stage supplies the real ones (:func:`make_generate_fn`, :func:`make_scaler`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager

import numpy as np
from tqdm.auto import tqdm

from hneurons.core import distributed
from hneurons.core.generation import Generation, HFBackend, SamplingParams
from hneurons.core.alpha import check_alpha
from hneurons.core.hooks import scale_down_weights, scale_neurons
from hneurons.errors import ConfigError
from hneurons.intervention.tasks import BENCHMARKS, GenerateFn, Item, Judge, get_benchmark
from hneurons.rundir import append_jsonl, atomic_path, read_jsonl
from hneurons.stats import random_neuron_draws
from hneurons.text.prompts import Conversation, render_conversation

PROGRESS = "progress.jsonl"  # the resume log of the sweep, in the stage folder


Scaler = Callable[[np.ndarray, float], ContextManager[None]]


def validate(icfg: Any) -> None:
    """Reject an unusable intervene section before any model is loaded."""
    if not icfg.benchmarks:
        raise ConfigError("intervene.benchmarks is empty; list at least one of " + ", ".join(sorted(BENCHMARKS)))
    for name in icfg.benchmarks:
        get_benchmark(name)
    if not icfg.alphas:
        raise ConfigError("intervene.alphas is empty; give at least one α, e.g. [0.0, 1.0, 2.0, 3.0]")
    for a in icfg.alphas:
        check_alpha(a, "intervene.alphas")
    if icfg.random_seeds < 0 or icfg.n_items < 0:
        raise ConfigError("intervene.random_seeds and intervene.n_items must be ≥ 0")
    if icfg.max_new_tokens is not None and icfg.max_new_tokens < 1:
        raise ConfigError(f"intervene.max_new_tokens must be ≥ 1 (or unset for the paper's), got {icfg.max_new_tokens}")
    if icfg.method not in {"hook", "weights"}:
        raise ConfigError(f"intervene.method must be hook or weights, got {icfg.method!r}")
    if icfg.judge not in {"rule", "llm"}:
        raise ConfigError(f"intervene.judge must be rule or llm, got {icfg.judge!r}")
    if icfg.judge == "llm" and not (icfg.judge_url and icfg.judge_model):
        raise ConfigError("intervene.judge = llm needs intervene.judge_url and intervene.judge_model")


def random_sets(n_total: int, exclude: np.ndarray, seed: int, n_seeds: int) -> dict[str, np.ndarray]:
    """``n_seeds`` random neuron sets of ``len(exclude)`` neurons, uniform over the non-H neurons
    (each seeded on its own, so adding seeds keeps the earlier sets)."""
    if n_seeds < 1:
        return {}
    draws = random_neuron_draws(n_total, len(exclude), exclude, n_seeds, seed, independent=True)
    return {f"random_{s}": d for s, d in enumerate(draws)}


def make_generate_fn(model: Any, tokenizer: Any, chat: bool, batch_size: int) -> GenerateFn:
    """A :data:`GenerateFn` over a local HF model (it runs under whatever hooks are active)."""
    backend = HFBackend(model, tokenizer, batch_size=batch_size)

    def generate(convs: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
        if not convs:
            return []
        prompts = [render_conversation(tokenizer, c, chat) for c in convs]
        return [g[0] for g in backend.generate(prompts, params, progress=False)]

    return generate


def make_scaler(layout: Any, method: str) -> Scaler:
    """``scaler(neurons, alpha)``: the hook (default) or the reversible weight edit."""
    if method == "weights":
        return lambda neurons, alpha: scale_down_weights(layout, neurons, alpha)
    return lambda neurons, alpha: scale_neurons(layout, neurons, alpha)


def chunk_seed(seed: int, chunk: int) -> int:
    """Sampling seed of one chunk: the same at every α and condition (paired design)."""
    return (seed * 1_000_003 + chunk * 7_919 + 1) % (2**31 - 1)


def item_key(bench: str, cond: str, alpha: float, item_id: str) -> tuple[str, str, float, str]:
    return bench, cond, float(alpha), str(item_id)


def load_progress(path: Path, run_key: str) -> dict[tuple[str, str, float, str], dict[str, Any]]:
    """Finished items of this run key (a repeated item counts once); records of other keys are dropped from the file."""
    records = read_jsonl(path, key=lambda r: (r.get("run"), item_key(r["bench"], r["condition"], r["alpha"], r["item_id"])))
    keep = [r for r in records if r.get("run") == run_key]
    if len(keep) != len(records):
        with atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep), encoding="utf-8")
    return {item_key(r["bench"], r["condition"], r["alpha"], r["item_id"]): r for r in keep}


@dataclass
class SweepSettings:
    """Everything about a sweep but its items, neuron sets and model: where it logs, what run it
    belongs to (``run_key``: a change of model, neurons or decoding never reuses old responses),
    the α grid, the decoding budget, the paired sampling seed and the chunk size."""

    progress_path: Path
    run_key: str
    alphas: Sequence[float]
    max_new_tokens: int | None
    seed: int
    chunk_size: int
    log: Callable[[str], None] = field(default=print)


def sweep(settings: SweepSettings, items: Mapping[str, Sequence[Item]], conditions: Mapping[str, np.ndarray],
          generate: GenerateFn, judge: Judge, scaler: Scaler) -> dict[tuple[str, str, float, str], dict[str, Any]]:
    """Generate and judge every (benchmark, condition, α, item) not yet in the progress log.

    ``conditions`` maps a name (``"H"`` first) to flat neuron indices. At α = 1 only the first
    condition is generated, without any hook, and its results stand for every condition.
    Returns all records of this run key (old and new), keyed by (bench, condition, α, item id).
    """
    st = settings
    if st.chunk_size < 1:
        raise ConfigError(f"chunk size must be ≥ 1, got {st.chunk_size}")
    distributed.fold_shard_logs(st.progress_path)
    done = load_progress(st.progress_path, st.run_key)
    first = next(iter(conditions))
    for bench_name, bench_items in items.items():
        bench = get_benchmark(bench_name)
        chunks = [list(bench_items[i:i + st.chunk_size]) for i in range(0, len(bench_items), st.chunk_size)]
        jobs = [(c, float(a)) for a in st.alphas for c in ([first] if float(a) == 1.0 else list(conditions))]
        todo = [(c, a, k) for c, a in jobs for k, ch in enumerate(chunks)
                if any(item_key(bench_name, c, a, it.id) not in done for it in ch)]
        if not todo:
            continue
        st.log(f"[intervene] {bench_name}: {len(todo)} of {len(jobs) * len(chunks)} chunks to generate")
        mine = []  # this rank's chunks (all of them in one process), merged in order below
        for cond, alpha, k in tqdm(distributed.shard(todo), desc=bench_name, unit="chunk", disable=None):
            params = bench.params(st.max_new_tokens, seed=chunk_seed(st.seed, k))
            scope = contextlib.nullcontext() if alpha == 1.0 else scaler(conditions[cond], alpha)
            with scope:
                results = bench.run(chunks[k], generate, judge, params)
            new = [{"run": st.run_key, "bench": bench_name, "condition": cond, "alpha": alpha, **r.to_dict()}
                   for r in results if item_key(bench_name, cond, alpha, r.item_id) not in done]
            append_jsonl(distributed.shard_log(st.progress_path), new)
            mine.append(new)
        for new in distributed.merge_shard_logs(st.progress_path, mine):
            done.update({item_key(rec["bench"], rec["condition"], rec["alpha"], rec["item_id"]): rec for rec in new})
    return done
