"""Stage 1 — responses: sample, judge, keep consistent questions, locate answer spans, split.

Paper protocol (the paper, arXiv 2512.01797 §2): the first N questions of the training pool, the prompt
``"{q} Respond with the answer only, without any explanation."`` through the chat template, K samples
(T = 1.0, top-k 50, top-p 0.9, ≤ 50 new tokens), refusals filtered, and only questions answered
correctly K/K (faithful, label 0) or wrongly K/K (hallucinated, label 1) are kept.

``responses.screen = true`` (the CPU default preset) first answers every question greedily and
samples K only for the questions the classes can use: all greedy-correct ones and as many
greedy-wrong ones. Small models answer few questions correctly, so sampling K for every question
would spend most of the time on questions that can only ever join the (plentiful) wrong class.

Every sampled response is appended to ``samples.jsonl`` as its batch finishes; a re-run reads the
log and samples only what is missing, so an interruption loses at most one batch. A torn last
record is cut off and a batch cut short is sampled again with the same seeds, its surviving samples
kept once (keyed by question, phase and sample), so a resumed run writes the same files as one that
was never interrupted.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from hneurons.core import distributed
from hneurons.core.generation import SamplingParams
from hneurons.data import load_dataset_with_report
from hneurons.data.registry import Record
from hneurons.detection.eval_sets import EVAL_SETS
from hneurons.errors import StageError
from hneurons.labelling.consistency import Tally, consistent_label, label_samples, split_classes
from hneurons.labelling.items import SpanRule, locate
from hneurons.labelling.verdicts import judge_response, qa_llm_judge
from hneurons.pipeline import Context
from hneurons.rundir import (
    append_jsonl,
    atomic_path,
    read_jsonl,
    unfinished_chunks,
    write_json,
)
from hneurons.stages._shared import sampling_backend
from hneurons.text.locator import make_llm_locator, span_quality
from hneurons.text.prompts import answer_stop, render_prompt, user_text
from hneurons.text.spans import Span


def inputs(ctx: Context) -> dict[str, Any]:
    return {"responses": ctx.cfg.section("responses"), "spans": ctx.cfg.section("spans"),
            "prompt_format": ctx.cfg.model.prompt_format,
            "model": ctx.model_fingerprint, "seed": ctx.cfg.seed}


def _judge(ctx: Context) -> Callable[[Record, str], tuple[str, str | None]]:
    """(verdict, matched alias) of one sample: the paper's refusal filter, then the alias or LLM judge."""
    r = ctx.cfg.responses
    llm = qa_llm_judge(r, ctx.rundir.path("responses", "judge_cache"))
    verdict_of = llm.judge_qa if llm is not None else None
    phrases = tuple(r.refusal_phrases)

    def judge(rec: Record, text: str) -> tuple[str, str | None]:
        v = judge_response(EVAL_SETS["triviaqa"], rec.question, text, rec.answers, phrases, verdict_of)
        return v.verdict, v.matched_alias

    return judge


@dataclass
class _Sampler:
    """Sampling state shared by the phases of one run: the backend, prompts, judge and resume log.

    ``tokens``/``seconds`` add up over every phase for the throughput in ``stats.json``.
    """

    ctx: Context
    backend: Any
    prompts: dict[str, str]
    judge: Callable[[Record, str], tuple[str, str | None]]
    done: dict[tuple[str, str], list[dict]]
    tokens: int = 0
    seconds: float = 0.0

    def phase(self, records: list[Record], phase: str, params: SamplingParams, chunk: int,
              seed_offset: int = 0) -> None:
        """Sample every chunk of records with samples missing from the log, appending only the missing ones.

        Chunks keep their uninterrupted positions (:func:`~hneurons.rundir.unfinished_chunks`), so a chunk
        cut short by an interruption is sampled again with the same seeds and its surviving samples are
        reproduced, not duplicated. Under ``torchrun`` each rank samples its share of the chunks into its
        own shard log and every rank gets the merged rows (:mod:`hneurons.core.distributed`).
        """
        done = self.done
        todo = unfinished_chunks(records, chunk, lambda r: len(done.get((r.id, phase), [])) >= params.n)
        log_path = self.ctx.rundir.path("responses", "samples.jsonl")
        mine: list[list[dict]] = []  # this rank's chunks (all of them in one process), merged below
        bar = tqdm(total=sum(len(part) for _, part in todo), desc=f"responses ({phase})", unit="q", disable=None)
        for start, part in distributed.shard(todo):
            t0 = time.perf_counter()
            # the seed follows the chunk's position in the list, so resumed chunks sample as before
            seed = self.ctx.cfg.seed * 7_919 + seed_offset + start
            gens = self.backend.generate([self.prompts[r.id] for r in part],
                                         SamplingParams(**{**params.__dict__, "seed": seed}), progress=False)
            self.seconds += time.perf_counter() - t0
            rows = []
            for rec, samples in zip(part, gens):
                have = {s["sample"] for s in done.get((rec.id, phase), [])}
                for j, g in enumerate(samples):
                    if j in have:
                        continue
                    verdict, alias = self.judge(rec, g.text)
                    rows.append({"qid": rec.id, "phase": phase, "sample": j, "text": g.text,
                                 "token_ids": list(g.token_ids), "finish_reason": g.finish_reason,
                                 "verdict": verdict, "matched_alias": alias})
            append_jsonl(distributed.shard_log(log_path), rows)
            mine.append(rows)
            bar.update(len(part))
        bar.close()
        for row in (row for rows in distributed.merge_shard_logs(log_path, mine) for row in rows):
            self.tokens += len(row["token_ids"])
            done.setdefault((row["qid"], phase), []).append(row)


def read_samples(ctx: Context) -> dict[tuple[str, str], list[dict]]:
    """The resume log by (question, phase); a torn last record is cut off, repeated samples ignored."""
    done: dict[tuple[str, str], list[dict]] = defaultdict(list)
    log_path = ctx.rundir.path("responses", "samples.jsonl")
    distributed.fold_shard_logs(log_path)
    for row in read_jsonl(log_path, key=lambda r: (r["qid"], r["phase"], r["sample"])):
        done[(row["qid"], row["phase"])].append(row)
    return done


def _screen(ctx: Context, sampler: _Sampler, records: list[Record], params: SamplingParams,
            stop: tuple[str, ...]) -> tuple[list[Record], dict[str, int]]:
    """Greedy screen, then K samples for the greedy-correct questions and as many greedy-wrong ones
    as the hallucinated class needs; returns the sampled questions (pool order) and the counts."""
    r = ctx.cfg.responses
    done = sampler.done
    per_chunk = max(1, r.batch_size // r.k) * 2  # questions per sampling chunk (K rows each)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=r.max_new_tokens, n=1, stop=stop)
    sampler.phase(records, "screen", greedy, chunk=r.batch_size)
    right = [rec for rec in records if done[(rec.id, "screen")][0]["verdict"] == "correct"]
    wrong = [rec for rec in records if done[(rec.id, "screen")][0]["verdict"] == "wrong"]
    if r.screen_max_candidates:
        right, wrong = right[:r.screen_max_candidates], wrong[:r.screen_max_candidates]
    ctx.log(f"[responses] screening: {len(right)}/{len(records)} greedy-correct; sampling K={r.k} for those, "
            "then greedy-wrong ones until the hallucinated class outnumbers the faithful one")
    sampler.phase(right, "sample", params, chunk=per_chunk)
    # Greedy-wrong questions nearly all come out hallucinated, and the class only needs as many
    # as the faithful one has (the split is balanced): sample them a chunk at a time, in pool
    # order, until it does. Each call extends the same list, so chunks keep their positions and
    # seeds, and a resumed run takes the same decisions from the log.
    used = 0
    while used < len(wrong):
        counts = Counter(consistent_label(done[(rec.id, "sample")], r.k, r.min_agree or r.k)
                         for rec in right + wrong[:used])
        if counts[1] >= max(counts[0] + max(2, counts[0] // 10), r.min_per_class * 2):
            break
        used = min(len(wrong), used + per_chunk)
        sampler.phase(wrong[:used], "sample", params, chunk=per_chunk,
                      seed_offset=len(records))  # seeds apart from the correct ones
    chosen = {rec.id for rec in right + wrong[:used]}
    candidates = [rec for rec in records if rec.id in chosen]
    return candidates, {"questions": len(records), "greedy_correct": len(right), "greedy_wrong": len(wrong),
                        "greedy_no_answer": sum(done[(rec.id, "screen")][0]["verdict"] == "no_answer" for rec in records),
                        "candidates": len(candidates), "greedy_wrong_sampled": used}


def run(ctx: Context) -> dict[str, Any]:
    cfg, r = ctx.cfg, ctx.cfg.responses
    records, report = load_dataset_with_report(r.dataset, path=r.path, limit=r.n_questions)
    pool = {"dataset": r.dataset, "file": str(report.path), "rows_read": report.n_read,
            "duplicate_ids_dropped": report.n_duplicate_ids, "duplicate_questions_dropped": report.n_duplicate_questions,
            "questions_used": len(records)}
    if distributed.is_main():
        ctx.rundir.update_manifest(question_pool=pool)
    if len(records) < r.n_questions:
        ctx.log(f"[responses] the pool has only {len(records)} questions (asked for {r.n_questions}); using all")
    chat = cfg.model.prompt_format == "chat"
    prompts = {rec.id: render_prompt(ctx.model.tokenizer, user_text(rec.question, r.suffix), chat=chat) for rec in records}
    sampler = _Sampler(ctx, sampling_backend(ctx), prompts, _judge(ctx), read_samples(ctx))
    stop = answer_stop(chat)
    sample_params = SamplingParams(temperature=r.temperature, top_k=r.top_k, top_p=r.top_p,
                                   max_new_tokens=r.max_new_tokens, n=r.k, stop=stop)
    if r.screen:
        candidates, screen_stats = _screen(ctx, sampler, records, sample_params, stop)
    else:
        candidates, screen_stats = records, {}
        sampler.phase(candidates, "sample", sample_params, chunk=max(1, r.batch_size // r.k) * 2)
    if not distributed.is_main():  # rank 0 writes the tables from the merged samples
        return {}
    return _label_and_split(ctx, SampledPool(records, candidates, sampler.done, sampler.tokens, sampler.seconds,
                                             screen_stats, pool))


@dataclass
class SampledPool:
    """What sampling leaves for labelling: the pool, the questions sampled K times, the resume log
    by (question, phase), throughput and the screen/pool counts for ``stats.json``."""

    records: list[Record]
    candidates: list[Record]
    done: dict[tuple[str, str], list[dict]]
    tokens: int = 0
    seconds: float = 0.0
    screen_stats: dict[str, int] = field(default_factory=dict)
    pool: dict[str, Any] = field(default_factory=dict)


def _labelled_rows(ctx: Context, sampled: SampledPool, rule: SpanRule, tally: Tally) -> list[dict]:
    """One row per consistently labelled question: its representative answer and located span."""
    r = ctx.cfg.responses
    need = r.min_agree or r.k
    labelled: list[dict] = []
    for rec in sampled.candidates:
        got = label_samples(sampled.done[(rec.id, "sample")], r.k, need, tally)
        if got is None:
            continue
        label, rep, n_correct = got
        # label-blind: only the parity rule "alias" reads the matched alias (and so the label)
        loc = locate(rule, rec.id, rec.question, rep["text"], rep["matched_alias"] if label == 0 else None)
        span, ok = loc.span, isinstance(loc.span, Span)
        labelled.append({
            "qid": rec.id, "question": rec.question, "prompt": rule.user(rec.question), "response": rep["text"],
            "label": label, "n_correct": n_correct, "k": r.k, "split": "", "span_start": span.start if ok else -1,
            "span_end": span.end if ok else -1, "span_text": span.text if ok else "",
            "span_status": "ok" if ok else span.reason, "matched_alias": rep.get("matched_alias") or "",
            "response_start": loc.sequence.prompt_end, "response_end": loc.sequence.response_end,
        })
    return labelled


def _label_and_split(ctx: Context, sampled: SampledPool) -> dict[str, Any]:
    """Consistency filter, answer spans and the balanced split; writes the tables, splits and stats."""
    r = ctx.cfg.responses
    llm = make_llm_locator(ctx.cfg.spans, ctx.rundir.path("responses", "span_cache"))
    rule = SpanRule(ctx.model.tokenizer, ctx.cfg.model.prompt_format == "chat", ctx.cfg.spans.method, r.suffix, llm)
    tally = Tally(r.k)
    labelled = _labelled_rows(ctx, sampled, rule, tally)
    sizes = [sum(row["label"] == c and row["span_status"] == "ok" for row in labelled) for c in (0, 1)]
    m = min(sizes)
    if m < r.min_per_class:
        raise StageError(
            f"only {sizes[0]} faithful and {sizes[1]} hallucinated consistent questions with located "
            f"spans (need ≥ {r.min_per_class} each); raise responses.n_questions, lower responses.temperature or "
            "responses.min_agree, or lower responses.min_per_class"
        )
    n_held = round(m * r.heldout_fraction) if m >= 4 else 0
    n_train = min(r.per_class, m - n_held)
    if n_train < r.per_class:
        ctx.log(f"[responses] warning: {n_train} training questions per class (asked for {r.per_class}); "
                "sizes shrank to what the model's consistent answers allow")
    splits = split_classes(labelled, n_train, n_held, ctx.cfg.seed)
    _write_tables(ctx, {rec.id: rec for rec in sampled.records}, sampled.done, labelled)
    write_json(ctx.rundir.path("responses", "splits.json"), {**splits, "seed": ctx.cfg.seed})
    unlocated = sum(row["span_status"] != "ok" for row in labelled)
    stats = {
        "questions_sampled": len(sampled.candidates), "questions_in_pool": len(sampled.records), "k": r.k,
        "min_agree": r.min_agree or r.k, "temperature": r.temperature, "correct_count_hist": tally.hist,
        "kept": {"faithful": sum(row["label"] == 0 for row in labelled),
                 "hallucinated": sum(row["label"] == 1 for row in labelled)},
        "mixed": tally.mixed, "refusal_questions": tally.refusal_questions,
        "no_answer_questions": tally.no_answer_questions, "no_answer_samples": tally.no_answer_samples,
        "unlocated_spans": unlocated,
        "train": {"faithful": n_train, "hallucinated": n_train}, "heldout": {"faithful": n_held, "hallucinated": n_held},
        "seconds": round(sampled.seconds, 2), "tokens": sampled.tokens,
        "tok_s": round(sampled.tokens / sampled.seconds, 1) if sampled.seconds else None,
        "screen": sampled.screen_stats, "judge": r.judge, "pool": sampled.pool,
        "spans": span_quality(labelled, ctx.cfg.spans.method, llm),
    }
    write_json(ctx.rundir.path("responses", "stats.json"), stats)
    return {"kept": stats["kept"], "train_per_class": n_train, "heldout_per_class": n_held, "unlocated_spans": unlocated}


def _write_tables(ctx: Context, by_id: dict[str, Record], done: dict[tuple[str, str], list[dict]],
                  labelled: list[dict]) -> None:
    rows = [{**s, "question": by_id[qid].question} for (qid, _), samples in done.items() if qid in by_id for s in samples]
    with atomic_path(ctx.rundir.path("responses", "responses.parquet")) as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    with atomic_path(ctx.rundir.path("responses", "labelled.parquet")) as tmp:
        pq.write_table(pa.Table.from_pylist(labelled), tmp)
