"""Intervention stage: compliance on the benchmarks as the H-Neurons are scaled by α (the paper, arXiv 2512.01797 §6).

For every benchmark, α in the grid and condition — the H-Neurons (``H``) and ``random_seeds``
random neuron sets of the same size drawn uniformly from all other neurons (``random_<s>``, the
control the paper lacks, §6.3) — the items are generated under :func:`~hneurons.core.hooks.scale_neurons`
(or the weight edit, ``method = "weights"``) and judged. The design is paired: every α and
condition sees the same items with the same per-chunk sampling seeds, so differences between α
are the intervention, not sampling noise. α = 1 is the identity for every neuron set, so it is
generated once and shared by all conditions.

Every finished chunk of items is appended to ``intervene/progress.jsonl`` keyed by
(benchmark, condition, α, item id) and stamped with a key of everything that changes responses,
so an interrupted run resumes where it stopped and never reuses responses of another model,
neuron set or decoding budget. The ``qa`` family (:mod:`hneurons.intervention.qa`) also writes
``intervene/qa.json``: outcome rates per question set and the items whose outcome flips.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from hneurons.core import distributed
from hneurons.errors import ConfigError, DataError
from hneurons.data import load_dataset
from hneurons.intervention.qa import load_qa
from hneurons.intervention.qa_summary import qa_summary
from hneurons.intervention.summary import generation_rows, summarize, write_parquet
from hneurons.intervention.engines import make_engine
from hneurons.intervention.sweep import (
    PROGRESS,
    SweepSettings,
    random_sets,
    sweep,
    validate,
)
from hneurons.intervention.sycophancy import load_sycophancy
from hneurons.intervention.tasks import Item, Judge, get_benchmark
from hneurons.probe.h_neurons import load_h_neurons
from hneurons.rundir import file_fingerprint, fingerprint_of, write_json

STAGE = "intervene"

# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _h_path(ctx: Any) -> Path:
    return ctx.rundir.root / "probe" / "h_neurons.json"


def _faitheval_path(ctx: Any) -> Path | None:
    p = ctx.cfg.intervene.faitheval_path
    return Path(p).expanduser() if p else None


def _section(ctx: Any) -> dict[str, Any]:
    """The intervene section; the engine settings only when they are not the local default (so runs
    made before ``intervene.backend`` existed keep their fingerprint)."""
    sec = ctx.cfg.section("intervene")
    if sec.get("backend", "hf") == "hf":
        for key in ("backend", "backend_url", "backend_model"):
            sec.pop(key, None)
    return sec


def inputs(ctx: Any) -> dict[str, Any]:
    """Config section, seed, model, prompt format, batch size and the files read."""
    h, fe = _h_path(ctx), _faitheval_path(ctx)
    return {
        "intervene": _section(ctx),
        "seed": ctx.cfg.seed,
        "model": ctx.model_fingerprint,
        "prompt_format": ctx.cfg.model.prompt_format,
        "batch_size": ctx.cfg.responses.batch_size,
        "h_neurons": file_fingerprint(h) if h.is_file() else None,
        "faitheval": file_fingerprint(fe) if fe is not None and fe.is_file() else None,
        "known_correct": file_fingerprint(k) if (k := _known_correct_path(ctx)) is not None else None,
        **({"qa_excludes": ctx.cfg.probe.suppression_questions} if "qa" in ctx.cfg.intervene.benchmarks else {}),
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


# --------------------------------------------------------------------------------------------
# Stage entry point
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _judge(ctx: Any) -> Iterator[Judge]:
    icfg = ctx.cfg.intervene
    if icfg.judge != "llm":
        yield Judge()
        return
    from hneurons.judges.rules import LLMJudge

    with LLMJudge(icfg.judge_url, icfg.judge_model, cache_dir=ctx.rundir.stage_dir(STAGE)) as llm:
        yield Judge(llm)


def _suppression_ids(ctx: Any) -> set[str]:
    """TriviaQA questions the probe stage answered at α = 0 to choose C (the last
    ``probe.suppression_questions`` of ``triviaqa_test``): the ``qa`` family leaves them out."""
    n = ctx.cfg.probe.suppression_questions
    return {r.id for r in load_dataset("triviaqa_test")[-n:]} if n > 0 else set()


def _load_items(ctx: Any) -> dict[str, list[Item]]:
    """Every configured benchmark's items (unique ids, at least one each)."""
    icfg = ctx.cfg.intervene
    items: dict[str, list[Item]] = {}
    for name in icfg.benchmarks:
        if name == "sycophancy" and icfg.sycophancy_source == "known_correct":
            items[name] = load_sycophancy(icfg, ctx.cfg.seed, prefer=_known_correct_ids(ctx))
        elif name == "qa":
            items[name] = load_qa(icfg, ctx.cfg.seed, exclude=_suppression_ids(ctx))
        else:
            items[name] = get_benchmark(name).load(icfg, ctx.cfg.seed)
        if not items[name]:
            raise DataError(f"intervene: benchmark {name!r} loaded no items; check its data file")
        ids = [it.id for it in items[name]]
        if len(set(ids)) != len(ids):
            raise DataError(f"intervene: benchmark {name!r} has repeated item ids; ids must be unique")
    return items


def run(ctx: Any) -> dict[str, Any]:
    """Sweep α × condition on every configured benchmark; write intervene.json and generations.parquet."""
    icfg = ctx.cfg.intervene
    validate(icfg)
    fe = _faitheval_path(ctx)
    if fe is not None and not fe.is_file():
        raise ConfigError(f"intervene.faitheval_path: {fe} does not exist")
    items = _load_items(ctx)

    loaded = ctx.model
    layout = loaded.layout
    h = load_h_neurons(_h_path(ctx), layout.d_ff, layout.n_layers)
    conditions = {"H": h, **random_sets(layout.n_neurons, h, ctx.cfg.seed, icfg.random_seeds)}
    chat = ctx.cfg.model.prompt_format == "chat"
    batch = ctx.cfg.responses.batch_size
    run_key = fingerprint_of({"model": loaded.fingerprint, "h": h.tolist(), "max_new_tokens": icfg.max_new_tokens,
                              "judge": [icfg.judge, icfg.judge_model], "chat": chat, "seed": ctx.cfg.seed,
                              "faitheval": file_fingerprint(fe) if fe else None, "method": icfg.method,
                              **({"backend": [icfg.backend, icfg.backend_model]} if icfg.backend != "hf" else {})})
    progress = ctx.rundir.path(STAGE, PROGRESS)
    generate, scaler = make_engine(icfg, loaded, chat, batch, conditions)  # intervene.backend: hf or openai
    with _judge(ctx) as judge:
        settings = SweepSettings(progress, run_key, icfg.alphas, icfg.max_new_tokens, ctx.cfg.seed, batch, ctx.log)
        records = sweep(settings, items, conditions, generate, judge, scaler)
        if not distributed.is_main():  # the other ranks generated their shards; rank 0 summarises
            return {}
        summary = summarize(records, items, list(conditions), icfg.alphas, judge.name, len(h))
        summary["judge_fallbacks"] = judge.fallbacks
    summary.update({"method": icfg.method, "max_new_tokens": icfg.max_new_tokens,
                    "neurons": {"H": h.tolist(), **{c: v.tolist() for c, v in conditions.items() if c != "H"}}})
    write_json(ctx.rundir.path(STAGE, "intervene.json"), summary)
    if "qa" in items:
        write_json(ctx.rundir.path(STAGE, "qa.json"), qa_summary(records, items["qa"], list(conditions), icfg.alphas))
    write_parquet(ctx.rundir.path(STAGE, "generations.parquet"), generation_rows(records, items, list(conditions), icfg.alphas))
    return {"benchmarks": {b: {"slope": v["slope"]["H"], "slope_random": v["slope"]["random"]}
                           for b, v in summary["benchmarks"].items()}, "n_neurons": len(h)}
