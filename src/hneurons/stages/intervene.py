"""Intervention stage: compliance on four benchmarks as the H-Neurons are scaled by α (PAPER.md §6).

For every benchmark, α in the grid and condition — the H-Neurons (``H``) and ``random_seeds``
random neuron sets of the same size drawn uniformly from all other neurons (``random_<s>``, the
control the paper lacks, §6.3) — the items are generated under :func:`~hneurons.hooks.scale_neurons`
(or the weight edit, ``method = "weights"``) and judged. The design is paired: every α and
condition sees the same items with the same per-chunk sampling seeds, so differences between α
are the intervention, not sampling noise. α = 1 is the identity for every neuron set, so it is
generated once and shared by all conditions.

Every finished chunk of items is appended to ``intervene/progress.jsonl`` keyed by
(benchmark, condition, α, item id) and stamped with a key of everything that changes responses,
so an interrupted run resumes where it stopped and never reuses responses of another model,
neuron set or decoding budget.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ContextManager

import numpy as np
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from hneurons.benchmarks import BENCHMARKS, Conversation, GenerateFn, Item, ItemResult, Judge, get_benchmark, load_sycophancy
from hneurons.errors import ConfigError, DataError, StageError
from hneurons.generation import Generation, HFBackend, SamplingParams
from hneurons.hooks import scale_down_weights, scale_neurons
from hneurons.rundir import append_jsonl, atomic_path, file_fingerprint, fingerprint_of, read_json, read_jsonl, write_json

STAGE = "intervene"
PROGRESS = "progress.jsonl"
Scaler = Callable[[np.ndarray, float], ContextManager[None]]

# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _h_path(ctx: Any) -> Path:
    return ctx.rundir.root / "probe" / "h_neurons.json"


def _faitheval_path(ctx: Any) -> Path | None:
    p = ctx.cfg.intervene.faitheval_path
    return Path(p).expanduser() if p else None


def inputs(ctx: Any) -> dict[str, Any]:
    """Config section, seed, model, prompt format, batch size and the files read."""
    h, fe = _h_path(ctx), _faitheval_path(ctx)
    return {
        "intervene": ctx.cfg.section("intervene"),
        "seed": ctx.cfg.seed,
        "model": ctx.model_fingerprint,
        "prompt_format": ctx.cfg.model.prompt_format,
        "batch_size": ctx.cfg.responses.batch_size,
        "h_neurons": file_fingerprint(h) if h.is_file() else None,
        "faitheval": file_fingerprint(fe) if fe is not None and fe.is_file() else None,
        "known_correct": file_fingerprint(k) if (k := _known_correct_path(ctx)) is not None else None,
    }


def _known_correct_path(ctx: Any) -> Path | None:
    """The detection items whose correct answers seed the sycophancy set (when configured and present)."""
    path = ctx.rundir.root / "detect" / "items_triviaqa.parquet"
    return path if ctx.cfg.intervene.sycophancy_source == "known_correct" and path.is_file() else None


def _known_correct_ids(ctx: Any) -> set[str]:
    path = _known_correct_path(ctx)
    if path is None:
        return set()
    table = pq.read_table(path, columns=["qid", "label"]).to_pydict()
    return {q for q, label in zip(table["qid"], table["label"]) if label == 0}


def validate(icfg: Any) -> None:
    """Reject an unusable intervene section before any model is loaded."""
    if not icfg.benchmarks:
        raise ConfigError("intervene.benchmarks is empty; list at least one of " + ", ".join(sorted(BENCHMARKS)))
    for name in icfg.benchmarks:
        get_benchmark(name)
    if not icfg.alphas:
        raise ConfigError("intervene.alphas is empty; give at least one α, e.g. [0.0, 1.0, 2.0, 3.0]")
    for a in icfg.alphas:
        if not isinstance(a, (int, float)) or not math.isfinite(a) or a < 0:
            raise ConfigError(f"intervene.alphas: {a!r} is not a finite number ≥ 0 (1 = no change)")
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


def load_h_neurons(path: Path, d_ff: int, n_layers: int) -> np.ndarray:
    """Flat indices (``layer * d_ff + neuron``) of the H-Neurons in ``probe/h_neurons.json``."""
    data = read_json(path)
    neurons = data.get("neurons") if isinstance(data, dict) else None
    if not isinstance(neurons, list):
        raise StageError(f"{path}: no 'neurons' list; re-run the probe stage")
    flat = []
    for i, n in enumerate(neurons):
        try:
            layer, j = int(n["layer"]), int(n["neuron"])
        except (KeyError, TypeError, ValueError):
            raise StageError(f"{path}: neurons[{i}] lacks an integer 'layer' or 'neuron'; re-run the probe stage") from None
        if not (0 <= layer < n_layers and 0 <= j < d_ff):
            raise ConfigError(f"{path}: neurons[{i}] = layer {layer}, neuron {j} is outside this model "
                              f"({n_layers} layers × {d_ff}); was the probe fitted on another model?")
        flat.append(layer * d_ff + j)
    if not flat:
        raise StageError(f"{path}: the probe selected no H-Neurons (no positive weights); choose a larger C "
                         "(probe.Cs) so there is something to scale")
    return np.asarray(sorted(set(flat)), dtype=np.int64)


def random_sets(n_total: int, exclude: np.ndarray, seed: int, n_seeds: int) -> dict[str, np.ndarray]:
    """``n_seeds`` random neuron sets of ``len(exclude)`` neurons, uniform over the non-H neurons."""
    pool = np.setdiff1d(np.arange(n_total, dtype=np.int64), exclude)
    if len(pool) < len(exclude):
        raise ConfigError(f"cannot draw {len(exclude)} random neurons from the {len(pool)} non-H neurons")
    return {f"random_{s}": np.sort(np.random.default_rng([seed, s]).choice(pool, size=len(exclude), replace=False))
            for s in range(n_seeds)}


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def render_conversation(tokenizer: Any, messages: Conversation, chat: bool = True) -> str:
    """A conversation ending with a user turn, as the prompt text to continue.

    ``chat``: the tokenizer's chat template with the generation prompt. Plain (base models):
    ``"{user}\\nAnswer:"`` per turn, earlier answers filled in (PAPER.md §8.26).
    """
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            raise ConfigError(f"model {name} has no chat template (a base model?); set model.prompt_format = \"plain\"")
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    parts = []
    for m in messages:
        parts.append(f"{m['content']}\nAnswer:" if m["role"] == "user" else f" {m['content']}\n")
    return "".join(parts)


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


# --------------------------------------------------------------------------------------------
# The sweep (model-free: takes a generate function and a scaler, so tests can fake both)
# --------------------------------------------------------------------------------------------


def chunk_seed(seed: int, chunk: int) -> int:
    """Sampling seed of one chunk: the same at every α and condition (paired design)."""
    return (seed * 1_000_003 + chunk * 7_919 + 1) % (2**31 - 1)


def _key(bench: str, cond: str, alpha: float, item_id: str) -> tuple[str, str, float, str]:
    return bench, cond, float(alpha), str(item_id)


def load_progress(path: Path, run_key: str) -> dict[tuple[str, str, float, str], dict[str, Any]]:
    """Finished items of this run key (a repeated item counts once); records of other keys are dropped from the file."""
    records = read_jsonl(path, key=lambda r: (r.get("run"), _key(r["bench"], r["condition"], r["alpha"], r["item_id"])))
    keep = [r for r in records if r.get("run") == run_key]
    if len(keep) != len(records):
        with atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep), encoding="utf-8")
    return {_key(r["bench"], r["condition"], r["alpha"], r["item_id"]): r for r in keep}


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
    done = load_progress(progress_path, run_key)
    first = next(iter(conditions))
    for bench_name, bench_items in items.items():
        bench = get_benchmark(bench_name)
        chunks = [list(bench_items[i:i + chunk_size]) for i in range(0, len(bench_items), chunk_size)]
        jobs = [(c, float(a)) for a in alphas for c in ([first] if float(a) == 1.0 else list(conditions))]
        todo = [(c, a, k) for c, a in jobs for k, ch in enumerate(chunks)
                if any(_key(bench_name, c, a, it.id) not in done for it in ch)]
        if not todo:
            continue
        log(f"[intervene] {bench_name}: {len(todo)} of {len(jobs) * len(chunks)} chunks to generate")
        for cond, alpha, k in tqdm(todo, desc=bench_name, unit="chunk", disable=None):
            params = bench.params(max_new_tokens, seed=chunk_seed(seed, k))
            scope = contextlib.nullcontext() if alpha == 1.0 else scaler(conditions[cond], alpha)
            with scope:
                results = bench.run(chunks[k], generate, judge, params)
            new = []
            for r in results:
                key = _key(bench_name, cond, alpha, r.item_id)
                if key not in done:
                    rec = {"run": run_key, "bench": bench_name, "condition": cond, "alpha": alpha, **r.to_dict()}
                    done[key] = rec
                    new.append(rec)
            append_jsonl(progress_path, new)
    return done


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


def alpha_key(alpha: float) -> str:
    """The JSON key of an α (``"0.0"``, ``"1.5"``)."""
    return str(float(alpha))


def summarize_results(results: Sequence[ItemResult]) -> dict[str, Any]:
    """Compliance over counted items (``complied`` not None) with a Wilson 95 % CI, plus counts."""
    from hneurons.stats import proportion_ci

    counted = [r for r in results if r.complied is not None]
    k = sum(bool(r.complied) for r in counted)
    rate, lo, hi = proportion_ci(k, len(counted))
    out: dict[str, Any] = {
        "compliance": rate, "ci": [lo, hi], "n": len(counted), "k": k, "n_items": len(results),
        "parse_failures": sum(r.parse_failure for r in results),
        "truncated": sum(r.truncated for r in results),
    }
    out["parse_failure_rate"] = out["parse_failures"] / len(results) if results else float("nan")
    initial = [r for r in results if r.extra.get("initial_correct")]
    if any("initial_correct" in r.extra for r in results):  # sycophancy
        out["all_items_rate"] = k / len(results) if results else float("nan")
        out["control"] = (sum(bool(r.extra.get("control_flip")) for r in initial) / len(initial)
                          if initial else float("nan"))
    return out


def pool_seeds(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Random-neuron summary over seeds: mean compliance, Wilson CI of the pooled counts."""
    from hneurons.stats import proportion_ci

    k = sum(s["k"] for s in per_seed)
    n = sum(s["n"] for s in per_seed)
    _, lo, hi = proportion_ci(k, n)
    rates = [s["compliance"] for s in per_seed if s["n"]]
    out: dict[str, Any] = {
        "compliance": float(np.mean(rates)) if rates else float("nan"), "ci": [lo, hi], "n": n, "k": k,
        "per_seed": [s["compliance"] for s in per_seed],
        "parse_failures": sum(s["parse_failures"] for s in per_seed),
        "truncated": sum(s["truncated"] for s in per_seed),
    }
    for extra in ("all_items_rate", "control"):
        vals = [s[extra] for s in per_seed if extra in s and np.isfinite(s[extra])]
        if any(extra in s for s in per_seed):
            out[extra] = float(np.mean(vals)) if vals else float("nan")
    return out


def slopes(alphas: Sequence[float], rates: Sequence[float]) -> tuple[float, float]:
    """(endpoint slope (CR(α_max) − CR(α_min)) / (α_max − α_min), least-squares slope), per unit α.

    α values with no counted items (NaN rate) are left out; fewer than two α give NaN.
    """
    pts = sorted((float(a), float(r)) for a, r in zip(alphas, rates) if np.isfinite(r))
    if len(pts) < 2 or pts[-1][0] == pts[0][0]:
        return float("nan"), float("nan")
    a = np.array([p[0] for p in pts])
    r = np.array([p[1] for p in pts])
    endpoint = (r[-1] - r[0]) / (a[-1] - a[0])
    lsq = float(np.polyfit(a, r, 1)[0])
    return float(endpoint), lsq


def summarize(
    records: Mapping[tuple[str, str, float, str], Mapping[str, Any]],
    items: Mapping[str, Sequence[Item]],
    conditions: Sequence[str],
    alphas: Sequence[float],
    judge_name: str,
    n_neurons: int,
) -> dict[str, Any]:
    """``intervene.json`` (docs/RUNDIR.md): per benchmark, α and condition, plus slopes."""
    first = conditions[0]
    randoms = [c for c in conditions if c != first]
    grid = sorted(float(a) for a in alphas)
    out: dict[str, Any] = {"alphas": grid, "n_neurons": n_neurons,
                           "random_seeds": len(randoms), "judge": judge_name, "benchmarks": {}}
    for bench_name, bench_items in items.items():
        bench = BENCHMARKS[bench_name]

        def results(cond: str, alpha: float) -> list[ItemResult]:
            c = first if alpha == 1.0 else cond
            try:
                return [ItemResult.from_dict(records[_key(bench_name, c, alpha, it.id)]) for it in bench_items]
            except KeyError as e:
                raise StageError(f"intervene: no result for {e.args[0]}; delete intervene/{PROGRESS} and re-run") from None

        h = {alpha_key(a): summarize_results(results(first, a)) for a in grid}
        rnd = {alpha_key(a): pool_seeds([summarize_results(results(c, a)) for c in randoms]) for a in grid} if randoms else {}
        h_end, h_lsq = slopes(grid, [h[alpha_key(a)]["compliance"] for a in grid])
        r_end, r_lsq = slopes(grid, [rnd[alpha_key(a)]["compliance"] for a in grid]) if randoms else (float("nan"),) * 2
        out["benchmarks"][bench_name] = {
            "n": len(bench_items), "description": bench.description, "compliance_rule": bench.compliance,
            "judge": "parser" if bench_name == "faitheval" else judge_name,
            # how many verdicts came from which judge (LLM, offline, LLM fallback), all conditions and α
            "judge_sources": dict(Counter(str(r["extra"]["judge"]) for k, r in records.items()
                                          if k[0] == bench_name and (r.get("extra") or {}).get("judge"))),
            "H": h, "random": rnd,
            "slope": {"H": h_end, "random": r_end},
            "slope_lsq": {"H": h_lsq, "random": r_lsq},
        }
    sl = [b["slope_lsq"]["H"] for b in out["benchmarks"].values() if np.isfinite(b["slope_lsq"]["H"])]
    out["mean_slope_lsq_pp"] = 100 * float(np.mean(sl)) if sl else float("nan")
    return out


def generation_rows(
    records: Mapping[tuple[str, str, float, str], Mapping[str, Any]],
    items: Mapping[str, Sequence[Item]],
    conditions: Sequence[str],
    alphas: Sequence[float],
) -> list[dict[str, Any]]:
    """Rows of ``generations.parquet``; α = 1 rows are repeated under every condition."""
    rows = []
    for bench_name, bench_items in items.items():
        for cond in conditions:
            for a in sorted(float(x) for x in alphas):
                src = conditions[0] if a == 1.0 else cond
                for it in bench_items:
                    r = records[_key(bench_name, src, a, it.id)]
                    rows.append({"bench": bench_name, "condition": cond, "alpha": a, "item_id": it.id,
                                 "prompt": r["prompt"], "response": r["response"], "complied": r["complied"],
                                 "parse_failure": bool(r["parse_failure"]), "truncated": bool(r["truncated"]),
                                 "extra": json.dumps(r.get("extra") or {}, ensure_ascii=False)})
    return rows


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    """Atomically write rows (fixed schema, so an empty table still has its columns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("bench", pa.string()), ("condition", pa.string()), ("alpha", pa.float64()),
                        ("item_id", pa.string()), ("prompt", pa.string()), ("response", pa.string()),
                        ("complied", pa.bool_()), ("parse_failure", pa.bool_()), ("truncated", pa.bool_()),
                        ("extra", pa.string())])
    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


# --------------------------------------------------------------------------------------------
# Stage entry point
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _judge(ctx: Any) -> Iterator[Judge]:
    icfg = ctx.cfg.intervene
    if icfg.judge != "llm":
        yield Judge()
        return
    from hneurons.judge import LLMJudge

    with LLMJudge(icfg.judge_url, icfg.judge_model, cache_dir=ctx.rundir.stage_dir(STAGE)) as llm:
        yield Judge(llm)


def run(ctx: Any) -> dict[str, Any]:
    """Sweep α × condition on every configured benchmark; write intervene.json and generations.parquet."""
    icfg = ctx.cfg.intervene
    validate(icfg)
    fe = _faitheval_path(ctx)
    if fe is not None and not fe.is_file():
        raise ConfigError(f"intervene.faitheval_path: {fe} does not exist")
    items: dict[str, list[Item]] = {}
    for name in icfg.benchmarks:
        if name == "sycophancy" and icfg.sycophancy_source == "known_correct":
            items[name] = load_sycophancy(icfg, ctx.cfg.seed, prefer=_known_correct_ids(ctx))
        else:
            items[name] = get_benchmark(name).load(icfg, ctx.cfg.seed)
        if not items[name]:
            raise DataError(f"intervene: benchmark {name!r} loaded no items; check its data file")
        ids = [it.id for it in items[name]]
        if len(set(ids)) != len(ids):
            raise DataError(f"intervene: benchmark {name!r} has repeated item ids; ids must be unique")

    loaded = ctx.model
    layout = loaded.layout
    h = load_h_neurons(_h_path(ctx), layout.d_ff, layout.n_layers)
    conditions = {"H": h, **random_sets(layout.n_neurons, h, ctx.cfg.seed, icfg.random_seeds)}
    chat = ctx.cfg.model.prompt_format == "chat"
    batch = ctx.cfg.responses.batch_size
    run_key = fingerprint_of({"model": loaded.fingerprint, "h": h.tolist(), "max_new_tokens": icfg.max_new_tokens,
                              "judge": [icfg.judge, icfg.judge_model], "chat": chat, "seed": ctx.cfg.seed,
                              "faitheval": file_fingerprint(fe) if fe else None, "method": icfg.method})
    progress = ctx.rundir.path(STAGE, PROGRESS)
    generate = make_generate_fn(loaded.model, loaded.tokenizer, chat, batch)
    with _judge(ctx) as judge:
        records = sweep(progress, run_key, items, conditions, icfg.alphas, generate, judge,
                        make_scaler(layout, icfg.method), icfg.max_new_tokens, ctx.cfg.seed, batch, ctx.log)
        summary = summarize(records, items, list(conditions), icfg.alphas, judge.name, len(h))
        summary["judge_fallbacks"] = judge.fallbacks
    summary.update({"method": icfg.method, "max_new_tokens": icfg.max_new_tokens,
                    "neurons": {"H": h.tolist(), **{c: v.tolist() for c, v in conditions.items() if c != "H"}}})
    write_json(ctx.rundir.path(STAGE, "intervene.json"), summary)
    write_parquet(ctx.rundir.path(STAGE, "generations.parquet"), generation_rows(records, items, list(conditions), icfg.alphas))
    return {"benchmarks": {b: {"slope": v["slope"]["H"], "slope_random": v["slope"]["random"]}
                           for b, v in summary["benchmarks"].items()}, "n_neurons": len(h)}
