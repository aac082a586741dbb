"""The α sweep: generate and judge every (benchmark, condition, α, item), resumably.

Model-free by design: :func:`sweep` takes a generate function and a scaler, so tests can fake
both, and the stage supplies the real ones (:func:`make_generate_fn`, :func:`make_scaler`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ContextManager

import numpy as np
from tqdm.auto import tqdm

from hneurons.core import distributed
from hneurons.core.generation import Generation, HFBackend, SamplingParams
from hneurons.core.hooks import check_alpha, scale_down_weights, scale_neurons
from hneurons.errors import ConfigError
from hneurons.intervention.tasks import (
    BENCHMARKS,
    Conversation,
    GenerateFn,
    Item,
    Judge,
    get_benchmark,
)
from hneurons.rundir import append_jsonl, atomic_path, read_jsonl
from hneurons.text.prompts import render_conversation

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
    """``n_seeds`` random neuron sets of ``len(exclude)`` neurons, uniform over the non-H neurons."""
    pool = np.setdiff1d(np.arange(n_total, dtype=np.int64), exclude)
    if len(pool) < len(exclude):
        raise ConfigError(f"cannot draw {len(exclude)} random neurons from the {len(pool)} non-H neurons")
    return {f"random_{s}": np.sort(np.random.default_rng([seed, s]).choice(pool, size=len(exclude), replace=False))
            for s in range(n_seeds)}


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


def sweep(
    progress_path: Path,
    run_key: str,
    items: Mapping[str, Sequence[Item]],
    conditions: Mapping[str, np.ndarray],
    alphas: Sequence[float],
    generate: GenerateFn,
    judge: Judge,
    scaler: Scaler,
    max_new_tokens: int | None,
    seed: int,
    chunk_size: int,
    log: Callable[[str], None] = print,
) -> dict[tuple[str, str, float, str], dict[str, Any]]:
    """Generate and judge every (benchmark, condition, α, item) not yet in the progress log.

    ``conditions`` maps a name (``"H"`` first) to flat neuron indices. At α = 1 only the first
    condition is generated, without any hook, and its results stand for every condition.
    Returns all records of this run key (old and new), keyed by (bench, condition, α, item id).
    """
    if chunk_size < 1:
        raise ConfigError(f"chunk size must be ≥ 1, got {chunk_size}")
    distributed.fold_shard_logs(progress_path)
    done = load_progress(progress_path, run_key)
    first = next(iter(conditions))
    for bench_name, bench_items in items.items():
        bench = get_benchmark(bench_name)
        chunks = [list(bench_items[i:i + chunk_size]) for i in range(0, len(bench_items), chunk_size)]
        jobs = [(c, float(a)) for a in alphas for c in ([first] if float(a) == 1.0 else list(conditions))]
        todo = [(c, a, k) for c, a in jobs for k, ch in enumerate(chunks)
                if any(item_key(bench_name, c, a, it.id) not in done for it in ch)]
        if not todo:
            continue
        log(f"[intervene] {bench_name}: {len(todo)} of {len(jobs) * len(chunks)} chunks to generate")
        mine = []  # this rank's chunks (all of them in one process), merged in order below
        for cond, alpha, k in tqdm(distributed.shard(todo), desc=bench_name, unit="chunk", disable=None):
            params = bench.params(max_new_tokens, seed=chunk_seed(seed, k))
            scope = contextlib.nullcontext() if alpha == 1.0 else scaler(conditions[cond], alpha)
            with scope:
                results = bench.run(chunks[k], generate, judge, params)
            new = [{"run": run_key, "bench": bench_name, "condition": cond, "alpha": alpha, **r.to_dict()}
                   for r in results if item_key(bench_name, cond, alpha, r.item_id) not in done]
            append_jsonl(distributed.shard_log(progress_path), new)
            mine.append(new)
        for new in distributed.merge_shard_logs(progress_path, mine):
            done.update({item_key(rec["bench"], rec["condition"], rec["alpha"], rec["item_id"]): rec for rec in new})
    return done
