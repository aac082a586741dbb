"""Stage 1 — responses: sample, judge, keep consistent questions, locate answer spans, split.

Paper protocol (PAPER.md §2): the first N questions of the training pool, the prompt
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

import random
import time
from collections import Counter, defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from hneurons.core import distributed
from hneurons.core.generation import SamplingParams
from hneurons.data import load_dataset_with_report
from hneurons.data.registry import Record
from hneurons.errors import ConfigError, StageError
from hneurons.judges.rules import LLMJudge, is_refusal, match_alias
from hneurons.pipeline import Context
from hneurons.rundir import (
    append_jsonl,
    atomic_path,
    read_jsonl,
    unfinished_chunks,
    write_json,
)
from hneurons.stages._shared import sampling_backend
from hneurons.text.locator import make_llm_locator, span_by_config, span_quality
from hneurons.text.prompts import render_prompt, user_text
from hneurons.text.spans import Span, build_sequence


def inputs(ctx: Context) -> dict[str, Any]:
    return {"responses": ctx.cfg.section("responses"), "spans": ctx.cfg.section("spans"),
            "prompt_format": ctx.cfg.model.prompt_format,
            "model": ctx.model_fingerprint, "seed": ctx.cfg.seed}


class _Judge:
    """Refusal prefilter, then the rule judge (alias match) or an LLM judge."""

    def __init__(self, ctx: Context):
        r = ctx.cfg.responses
        self.phrases = tuple(r.refusal_phrases)
        self.llm = None
        if r.judge == "llm":
            if not (r.judge_url and r.judge_model):
                raise ConfigError("responses.judge = llm needs responses.judge_url and responses.judge_model")
            self.llm = LLMJudge(r.judge_url, r.judge_model, cache_dir=ctx.rundir.path("responses", "judge_cache"))

    def __call__(self, rec: Record, text: str) -> tuple[str, str | None]:
        if not text.strip():  # e.g. a base model stopped before it answered: neither right nor wrong
            return "no_answer", None
        if is_refusal(text, self.phrases):
            return "refusal", None
        alias = match_alias(text, rec.answers, rec.question)
        if self.llm is not None:
            verdict = self.llm.judge_qa(rec.question, text, rec.answers)
            if verdict is None:
                return "error", alias
            return ("correct" if verdict else "wrong"), alias
        return ("correct" if alias is not None else "wrong"), alias


def _sample_phase(ctx: Context, backend: Any, records: list[Record], prompts: dict[str, str], phase: str,
                  params: SamplingParams, judge: _Judge, done: dict[tuple[str, str], list[dict]],
                  chunk: int, seed_offset: int = 0) -> tuple[int, float]:
    """Sample every chunk of records with samples missing from the log, appending only the missing ones.

    Chunks keep their uninterrupted positions (:func:`~hneurons.rundir.unfinished_chunks`), so a chunk
    cut short by an interruption is sampled again with the same seeds and its surviving samples are
    reproduced, not duplicated.
    """
    todo = unfinished_chunks(records, chunk, lambda r: len(done.get((r.id, phase), [])) >= params.n)
    log_path = ctx.rundir.path("responses", "samples.jsonl")
    seconds = 0.0
    mine: list[list[dict]] = []  # this rank's chunks (all of them in one process), merged below
    bar = tqdm(total=sum(len(part) for _, part in todo), desc=f"responses ({phase})", unit="q")
    for start, part in distributed.shard(todo):
        t0 = time.perf_counter()
        # the seed follows the chunk's position in the list, so resumed chunks sample as before
        seed = ctx.cfg.seed * 7_919 + seed_offset + start
        gens = backend.generate([prompts[r.id] for r in part], SamplingParams(**{**params.__dict__, "seed": seed}),
                                progress=False)
        seconds += time.perf_counter() - t0
        rows = []
        for rec, samples in zip(part, gens):
            have = {s["sample"] for s in done.get((rec.id, phase), [])}
            for j, g in enumerate(samples):
                if j in have:
                    continue
                verdict, alias = judge(rec, g.text)
                rows.append({"qid": rec.id, "phase": phase, "sample": j, "text": g.text, "token_ids": list(g.token_ids),
                             "finish_reason": g.finish_reason, "verdict": verdict, "matched_alias": alias})
        append_jsonl(distributed.shard_log(log_path), rows)
        mine.append(rows)
        bar.update(len(part))
    bar.close()
    merged = distributed.merge_shard_logs(log_path, mine)
    for row in (row for rows in merged for row in rows):
        done.setdefault((row["qid"], phase), []).append(row)
    return sum(len(row["token_ids"]) for rows in merged for row in rows), seconds


def read_samples(ctx: Context) -> dict[tuple[str, str], list[dict]]:
    """The resume log by (question, phase); a torn last record is cut off, repeated samples ignored."""
    done: dict[tuple[str, str], list[dict]] = defaultdict(list)
    log_path = ctx.rundir.path("responses", "samples.jsonl")
    distributed.fold_shard_logs(log_path)
    for row in read_jsonl(log_path, key=lambda r: (r["qid"], r["phase"], r["sample"])):
        done[(row["qid"], row["phase"])].append(row)
    return done


def _consistent_label(samples: list[dict], k: int, need: int) -> int | None:
    """0 (faithful) or 1 (hallucinated) when ≥ ``need`` of the first ``k`` samples agree and none is a
    refusal, empty or unjudged; None otherwise (mixed, dropped, or not sampled yet)."""
    samples = sorted(samples, key=lambda s: s["sample"])[:k]
    if len(samples) < k or any(s["verdict"] not in ("correct", "wrong") for s in samples):
        return None
    n_correct = sum(s["verdict"] == "correct" for s in samples)
    return 0 if n_correct >= need else 1 if k - n_correct >= need else None


def _representative(samples: list[dict]) -> dict:
    """The most frequent response (ties: first in sampling order — deterministic, PAPER.md §8.24)."""
    counts = Counter(s["text"] for s in samples)
    best = max(counts.values())
    return next(s for s in samples if counts[s["text"]] == best)


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
    loaded = ctx.model
    chat = cfg.model.prompt_format == "chat"
    prompts = {rec.id: render_prompt(loaded.tokenizer, user_text(rec.question, r.suffix), chat=chat) for rec in records}
    backend = sampling_backend(ctx)
    judge = _Judge(ctx)
    done = read_samples(ctx)
    stop = ("\n",) if not chat else ()
    sample_params = SamplingParams(temperature=r.temperature, top_k=r.top_k, top_p=r.top_p,
                                   max_new_tokens=r.max_new_tokens, n=r.k, stop=stop)
    tokens = 0
    seconds = 0.0
    screen_stats: dict[str, int] = {}
    candidates = records
    per_chunk = max(1, r.batch_size // r.k) * 2  # questions per sampling chunk (K rows each)
    if r.screen:
        greedy = SamplingParams(temperature=0.0, max_new_tokens=r.max_new_tokens, n=1, stop=stop)
        t, s = _sample_phase(ctx, backend, records, prompts, "screen", greedy, judge, done, chunk=r.batch_size)
        tokens, seconds = tokens + t, seconds + s
        right = [rec for rec in records if done[(rec.id, "screen")][0]["verdict"] == "correct"]
        wrong = [rec for rec in records if done[(rec.id, "screen")][0]["verdict"] == "wrong"]
        if r.screen_max_candidates:
            right, wrong = right[:r.screen_max_candidates], wrong[:r.screen_max_candidates]
        ctx.log(f"[responses] screening: {len(right)}/{len(records)} greedy-correct; sampling K={r.k} for those, "
                "then greedy-wrong ones until the hallucinated class outnumbers the faithful one")
        t, s = _sample_phase(ctx, backend, right, prompts, "sample", sample_params, judge, done, chunk=per_chunk)
        tokens, seconds = tokens + t, seconds + s
        # Greedy-wrong questions nearly all come out hallucinated, and the class only needs as many
        # as the faithful one has (the split is balanced): sample them a chunk at a time, in pool
        # order, until it does. Each call extends the same list, so chunks keep their positions and
        # seeds, and a resumed run takes the same decisions from the log.
        used = 0
        while used < len(wrong):
            counts = Counter(_consistent_label(done[(rec.id, "sample")], r.k, r.min_agree or r.k)
                             for rec in right + wrong[:used])
            if counts[1] >= max(counts[0] + max(2, counts[0] // 10), r.min_per_class * 2):
                break
            used = min(len(wrong), used + per_chunk)
            t, s = _sample_phase(ctx, backend, wrong[:used], prompts, "sample", sample_params, judge, done,
                                 chunk=per_chunk, seed_offset=len(records))  # seeds apart from the correct ones
            tokens, seconds = tokens + t, seconds + s
        chosen = {rec.id for rec in right + wrong[:used]}
        candidates = [rec for rec in records if rec.id in chosen]
        screen_stats = {"questions": len(records), "greedy_correct": len(right), "greedy_wrong": len(wrong),
                        "greedy_no_answer": sum(done[(rec.id, "screen")][0]["verdict"] == "no_answer" for rec in records),
                        "candidates": len(candidates), "greedy_wrong_sampled": used}
    else:
        t, s = _sample_phase(ctx, backend, candidates, prompts, "sample", sample_params, judge, done, chunk=per_chunk)
        tokens, seconds = tokens + t, seconds + s
    if not distributed.is_main():  # rank 0 writes the tables from the merged samples
        return {}
    return _label_and_split(ctx, records, candidates, prompts, done, chat, tokens, seconds, screen_stats, pool)


def _label_and_split(ctx: Context, records: list[Record], candidates: list[Record], prompts: dict[str, str],
                     done: dict[tuple[str, str], list[dict]], chat: bool, tokens: int, seconds: float,
                     screen_stats: dict[str, int], pool: dict[str, Any]) -> dict[str, Any]:
    r = ctx.cfg.responses
    k = r.k
    need = r.min_agree or k
    tok = ctx.model.tokenizer
    hist = [0] * (k + 1)
    refusal_q = no_answer_q = no_answer_s = mixed = unlocated = 0
    labelled: list[dict] = []
    by_id = {rec.id: rec for rec in records}
    method = ctx.cfg.spans.method
    llm = make_llm_locator(ctx.cfg.spans, ctx.rundir.path("responses", "span_cache"))
    for rec in candidates:
        samples = sorted(done[(rec.id, "sample")], key=lambda s: s["sample"])[:k]
        n_correct = sum(s["verdict"] == "correct" for s in samples)
        hist[n_correct] += 1
        empty = sum(s["verdict"] == "no_answer" for s in samples)
        if empty:  # dropped like a refusal, counted apart
            no_answer_q, no_answer_s = no_answer_q + 1, no_answer_s + empty
            continue
        if any(s["verdict"] in ("refusal", "error") for s in samples):
            refusal_q += 1
            continue
        if n_correct >= need:
            label, pool = 0, [s for s in samples if s["verdict"] == "correct"]
        elif k - n_correct >= need:
            label, pool = 1, [s for s in samples if s["verdict"] == "wrong"]
        else:
            mixed += 1
            continue
        rep = _representative(pool)
        user = user_text(rec.question, r.suffix)
        seq = build_sequence(tok, user, rep["text"], chat=chat)
        # label-blind: only the parity rule "alias" reads the matched alias (and so the label)
        span = span_by_config(seq, rec.question, method, llm, rep["matched_alias"] if label == 0 else None)
        ok = isinstance(span, Span)
        unlocated += not ok
        labelled.append({
            "qid": rec.id, "question": rec.question, "prompt": user, "response": rep["text"], "label": label,
            "n_correct": n_correct, "k": k, "split": "", "span_start": span.start if ok else -1,
            "span_end": span.end if ok else -1, "span_text": span.text if ok else "",
            "span_status": "ok" if ok else span.reason, "matched_alias": rep.get("matched_alias") or "",
            "response_start": seq.prompt_end, "response_end": seq.response_end,
        })
    classes = {c: [row for row in labelled if row["label"] == c and row["span_status"] == "ok"] for c in (0, 1)}
    m = min(len(classes[0]), len(classes[1]))
    if m < r.min_per_class:
        raise StageError(
            f"only {len(classes[0])} faithful and {len(classes[1])} hallucinated consistent questions with located "
            f"spans (need ≥ {r.min_per_class} each); raise responses.n_questions, lower responses.temperature or "
            "responses.min_agree, or lower responses.min_per_class"
        )
    n_held = round(m * r.heldout_fraction) if m >= 4 else 0
    n_train = min(r.per_class, m - n_held)
    if n_train < r.per_class:
        ctx.log(f"[responses] warning: {n_train} training questions per class (asked for {r.per_class}); "
                "sizes shrank to what the model's consistent answers allow")
    rng = random.Random(ctx.cfg.seed)
    splits: dict[str, dict[str, list[str]]] = {"train": {}, "heldout": {}}
    for c, rows in classes.items():
        rows = rows[:]
        rng.shuffle(rows)
        for row in rows[:n_train]:
            row["split"] = "train"
        for row in rows[n_train:n_train + n_held]:
            row["split"] = "heldout"
        splits["train"][str(c)] = [row["qid"] for row in rows[:n_train]]
        splits["heldout"][str(c)] = [row["qid"] for row in rows[n_train:n_train + n_held]]
    _write_tables(ctx, by_id, done, labelled)
    write_json(ctx.rundir.path("responses", "splits.json"), {**splits, "seed": ctx.cfg.seed})
    stats = {
        "questions_sampled": len(candidates), "questions_in_pool": len(records), "k": k, "min_agree": need,
        "temperature": r.temperature, "correct_count_hist": hist,
        "kept": {"faithful": sum(row["label"] == 0 for row in labelled),
                 "hallucinated": sum(row["label"] == 1 for row in labelled)},
        "mixed": mixed, "refusal_questions": refusal_q,
        "no_answer_questions": no_answer_q,
        "no_answer_samples": no_answer_s,
        "unlocated_spans": unlocated,
        "train": {"faithful": n_train, "hallucinated": n_train}, "heldout": {"faithful": n_held, "hallucinated": n_held},
        "seconds": round(seconds, 2), "tokens": tokens, "tok_s": round(tokens / seconds, 1) if seconds else None,
        "screen": screen_stats, "judge": r.judge, "pool": pool,
        "spans": span_quality(labelled, method, llm),
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
