"""Detect stage: the H-Neuron probe and its baselines on four held-out sets (PAPER.md §5).

For each configured set: the first ``detect.n_questions`` questions, one response each with the
paper prompt (greedy when ``detect.temperature`` is 0), judged, answer spans located, a balanced
subset drawn, answer-region CETT features extracted to ``features/detect_<set>/``. Every method of
:data:`hneurons.detection.methods.BASELINES` is fitted on the training data and scores the items; accuracy and
AUROC with bootstrap CIs go to ``detect/detect.json``. On held-out TriviaQA the stage also measures
selective answering (risk–coverage) over all judged items, not only the balanced subset.

Resume: sampled responses are appended to ``detect/samples_<set>.jsonl`` as batches finish
(lines carry the sampling parameters, so a config change never reuses stale responses), and the
feature store skips finished chunks.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from hneurons.core import distributed
from hneurons.config import Config
from hneurons.core.features import FeatureItem
from hneurons.core.store import FeatureStore, answer_features
from hneurons.detection.methods import (
    BASELINES,
    EVAL_SETS,
    EvalData,
    EvalSet,
    TrainData,
    balance,
    judge_response,
    score_metrics,
    selective_answering,
    token_stats,
)
from hneurons.errors import ConfigError, HNeuronsError, StageError
from hneurons.rundir import atomic_path, file_fingerprint, fingerprint_of, write_json
from hneurons.stages._shared import answers_logged, sampling_backend
from hneurons.text.prompts import user_text

RC_METHODS = ("h_neurons", "h_neurons_full_l1", "random", "logprob", "entropy")


def _read_files(ctx: Any) -> dict[str, Path]:
    root = ctx.rundir.root
    return {"probe": root / "probe" / "probe.safetensors", "labelled": root / "responses" / "labelled.parquet",
            "train_index": root / "features" / "train" / "index.json"}


def inputs(ctx: Any) -> dict[str, Any]:
    """Config sections that change the result, the model fingerprint and the files read."""
    cfg: Config = ctx.cfg
    r = cfg.responses
    return {
        "detect": cfg.section("detect"),
        "responses": {"suffix": r.suffix, "top_k": r.top_k, "top_p": r.top_p, "judge": r.judge,
                      "judge_model": r.judge_model, "refusal_phrases": r.refusal_phrases},
        "features": {"other_scope": cfg.features.other_scope, "store_dtype": cfg.features.store_dtype},
        "probe_mode": cfg.probe.mode,
        "spans": cfg.section("spans"),
        "prompt_format": cfg.model.prompt_format,
        "seed": cfg.seed,
        "model": ctx.model_fingerprint,
        "files": {k: file_fingerprint(p) if p.is_file() else None for k, p in _read_files(ctx).items()},
    }


# --------------------------------------------------------------------------------------------
# Training side
# --------------------------------------------------------------------------------------------


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise StageError(f"{path} is missing; run `hneurons responses` first")
    return pq.read_table(path).to_pylist()


def _write_parquet(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({c: [r.get(c) for r in rows] for c in columns})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _train_items(ctx: Any, qids: list[str], rows: dict[str, dict[str, Any]]) -> list[FeatureItem]:
    """Rebuild the training sequences (as the features stage did) for the token-statistics pass."""
    from hneurons.text.spans import build_sequence

    tok = ctx.model.tokenizer
    chat = ctx.cfg.model.prompt_format == "chat"
    items = []
    for q in qids:
        row = rows[q]
        seq = build_sequence(tok, row["prompt"], row["response"], chat=chat)
        items.append(FeatureItem(q, tuple(seq.input_ids), (int(row["span_start"]), int(row["span_end"])),
                                 (seq.prompt_end, seq.response_end)))
    return items


def _training_data(ctx: Any) -> TrainData:
    from hneurons.probe.estimator import HNeuronProbe

    cfg: Config = ctx.cfg
    files = _read_files(ctx)
    lm = ctx.model
    probe = HNeuronProbe.load(files["probe"])
    mode = cfg.probe.mode
    regions = ["answer", "other"] if mode == "3-vs-1" else ["answer"]
    qids, feats = FeatureStore(files["train_index"].parent).load(regions=regions, expect_fingerprint=lm.fingerprint)
    rows = {str(r["qid"]): r for r in _read_parquet(files["labelled"])}
    missing = [q for q in qids if q not in rows]
    if missing:
        raise StageError(f"features/train has question {missing[0]!r} that responses/labelled.parquet lacks; "
                         "re-run `hneurons features --force`")
    labels = np.array([int(rows[q]["label"]) for q in qids], dtype=np.int64)
    other = feats.get("other")
    layer, arrays = FeatureStore(files["train_index"].parent).load_stats()
    st = token_stats(_train_items(ctx, qids, rows), layer, arrays)
    return TrainData(feats["answer"], other, labels, probe, mode, lm.layout.d_ff, lm.layout.n_layers, st,
                     cfg.detect.random_draws, cfg.seed)


# --------------------------------------------------------------------------------------------
# Evaluation sets: questions, sampling (resumable), judging, spans
# --------------------------------------------------------------------------------------------


def _packaged_texts() -> list[str]:
    """Questions and answers of every packaged dataset, so no NonExist entity occurs in any of them."""
    from hneurons.data import list_datasets, load_dataset

    texts: list[str] = []
    for spec in list_datasets():
        if not spec.files:
            continue
        try:
            recs = load_dataset(spec.name)
        except HNeuronsError:
            continue  # a packaged file that is absent in this install cannot contain the entity
        for r in recs:
            texts.append(r.question)
            texts.extend(r.answers)
    return texts


def _questions(ctx: Any, es: EvalSet) -> list[Any]:
    from hneurons.data import load_dataset
    from hneurons.data.constructed import build_nonexist
    from hneurons.data.registry import load_records, save_records

    dc = ctx.cfg.detect
    if es.dataset is not None:
        return load_dataset(es.dataset, limit=dc.n_questions)
    n = dc.n_questions if dc.nonexist_questions is None else dc.nonexist_questions
    path = ctx.rundir.path("detect", "nonexist.jsonl")
    if path.is_file():
        recs = load_records(path)
        if len(recs) >= n:
            return recs[:n]
    recs = build_nonexist(n, seed=ctx.cfg.seed, exclude_texts=_packaged_texts())
    if distributed.is_main():
        save_records(recs, path)
    return recs


def _sample(ctx: Any, name: str, recs: list[Any]) -> dict[str, dict[str, Any]]:
    """One response per question, appended to ``detect/samples_<set>.jsonl`` chunk by chunk."""
    from hneurons.core.generation import SamplingParams
    from hneurons.text.prompts import render_prompt

    cfg: Config = ctx.cfg
    dc, r = cfg.detect, cfg.responses
    params_key = fingerprint_of({"t": dc.temperature, "k": r.top_k, "p": r.top_p, "max": dc.max_new_tokens,
                                 "suffix": r.suffix, "seed": cfg.seed, "fmt": cfg.model.prompt_format,
                                 "backend": r.backend, "model": ctx.model_fingerprint})
    chat = cfg.model.prompt_format == "chat"
    params = SamplingParams(temperature=dc.temperature, top_k=r.top_k, top_p=r.top_p,
                            max_new_tokens=dc.max_new_tokens, n=1, seed=cfg.seed * 100_003)
    return answers_logged(
        ctx, ctx.rundir.path("detect", f"samples_{name}.jsonl"), params_key, recs,
        lambda rec: render_prompt(ctx.model.tokenizer, user_text(rec.question, r.suffix), chat=chat),
        lambda: sampling_backend(ctx),  # responses.backend: hf, vllm or an OpenAI-compatible server
        params, f"[detect] {name}: sampling")


def _llm_verdict(ctx: Any) -> Any:
    r = ctx.cfg.responses
    if r.judge != "llm":
        return None
    from hneurons.judges.rules import LLMJudge

    if not r.judge_url or not r.judge_model:
        raise ConfigError("responses.judge = llm needs responses.judge_url and responses.judge_model")
    judge = LLMJudge(r.judge_url, r.judge_model, cache_dir=ctx.rundir.path("detect", "judge_cache"))
    return judge.judge_qa


def _judge_and_locate(ctx: Any, es: EvalSet, recs: list[Any], samples: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[FeatureItem | None]]:
    """Judged rows (every sampled question) and their feature items (None when dropped or unlocated)."""
    from hneurons.text.locator import make_llm_locator, span_by_config
    from hneurons.text.spans import (
        SpanFailure,
        build_sequence,
        locate_answer,
        whole_response_span,
    )

    cfg: Config = ctx.cfg
    tok = ctx.model.tokenizer
    chat = cfg.model.prompt_format == "chat"
    llm = _llm_verdict(ctx) if es.refusals == "drop" else None
    method = cfg.spans.method
    locator = make_llm_locator(cfg.spans, ctx.rundir.path("detect", "span_cache"))
    rows, items = [], []
    for rec in recs:
        text = samples[rec.id]["text"]
        v = judge_response(es, rec.question, text, rec.answers, cfg.responses.refusal_phrases, llm)
        row = {"qid": rec.id, "question": rec.question, "response": text, "verdict": v.verdict,
               "label": v.label, "span_start": -1, "span_end": -1, "span_text": "", "span_status": "dropped"}
        item = None
        if v.label is not None:
            seq = build_sequence(tok, user_text(rec.question, cfg.responses.suffix), text, chat=chat)
            if method == "alias" and es.refusals != "drop":
                # the parity rule on NonExist: a refusal's phrase, else the whole response
                span = locate_answer(seq, v.answer) if v.answer else SpanFailure("no phrase")
                if isinstance(span, SpanFailure):
                    span = whole_response_span(seq)
            else:  # the training rule: label-blind for every method but the parity rule "alias"
                span = span_by_config(seq, rec.question, method, locator, v.answer)
            if isinstance(span, SpanFailure):
                row["span_status"] = span.reason
            else:
                row.update(span_start=span.start, span_end=span.end, span_text=span.text, span_status="ok")
                item = FeatureItem(rec.id, tuple(seq.input_ids), (span.start, span.end), (seq.prompt_end, seq.response_end))
        rows.append(row)
        items.append(item)
    return rows, items


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------


def run(ctx: Any) -> dict[str, Any]:
    """Evaluate every method on every configured set; write detect.json, scores.csv, risk_coverage.json."""
    cfg: Config = ctx.cfg
    dc = cfg.detect
    unknown = [s for s in dc.sets if s not in EVAL_SETS]
    if unknown:
        raise ConfigError(f"detect.sets: unknown set {unknown[0]!r}; choose from {', '.join(EVAL_SETS)}")
    if not dc.sets:
        return {"status": "not run", "reason": "detect.sets is empty"}
    train = _training_data(ctx)
    scorers, method_errors = {}, {}
    for name, b in BASELINES.items():
        try:
            scorers[name] = b.fit(train)
        except HNeuronsError as exc:
            method_errors[name] = str(exc)
            ctx.log(f"[detect] method {name} not fitted: {exc}")
    lm = ctx.model
    result_sets: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    score_rows: list[list[Any]] = []
    rc: dict[str, Any] | None = None
    # selective answering is measured on held-out TriviaQA (the smoke preset's stand-in is "smoke")
    rc_set = next((n for n in ("triviaqa", "smoke") if n in dc.sets), "triviaqa")
    for name in dc.sets:
        es = EVAL_SETS[name]
        recs = _questions(ctx, es)
        samples = _sample(ctx, name, recs)
        rows, items = _judge_and_locate(ctx, es, recs, samples)
        located = [i for i, it in enumerate(items) if it is not None]
        labels = np.array([rows[i]["label"] for i in located], dtype=np.int64)
        bal = balance(labels, dc.per_class, dc.min_per_class, cfg.seed)
        keep = set(int(located[j]) for j in bal.indices)
        for i, row in enumerate(rows):
            row["balanced"] = i in keep
        if distributed.is_main():
            _write_parquet(ctx.rundir.path("detect", f"items_{name}.parquet"), rows,
                           ["qid", "question", "response", "verdict", "label", "span_start", "span_end",
                            "span_text", "span_status", "balanced"])
        counts = {"questions": len(recs), "refusals": sum(r["verdict"] == "refusal" for r in rows),
                  "no_answer": sum(r["verdict"] == "no_answer" for r in rows),
                  "judge_errors": sum(r["verdict"] == "error" for r in rows),
                  "unlocated": sum(r["label"] is not None and r["span_status"] != "ok" for r in rows),
                  "available": bal.available}
        if bal.reason is not None:
            skipped[name] = bal.reason
            ctx.log(f"[detect] {name} skipped: {bal.reason}")
            continue
        # TriviaQA keeps the first risk_coverage_items located items (all by default) for selective
        # answering, in question order so their accuracy is the model's; other sets only the balanced ones.
        rc_idx = located[:dc.risk_coverage_items or None] if name == rc_set else []
        feat_idx = sorted(keep.union(rc_idx))
        feat_items = [items[i] for i in feat_idx]
        store = ctx.rundir.root / "features" / f"detect_{name}"
        # one forward per item gives the CETT features and the token statistics of the baselines
        answer = answer_features(store, lm, feat_items, dtype=cfg.features.store_dtype,
                                 batch_size=cfg.features.batch_size, stats_layer=train.stats.residual_layer)
        if not distributed.is_main():  # the other ranks helped sample and extract; rank 0 scores
            continue
        st = token_stats(feat_items, *FeatureStore(store).load_stats())
        ev = EvalData(answer, st)
        pos = {i: p for p, i in enumerate(feat_idx)}
        bal_rows = np.array([pos[i] for i in sorted(keep)])
        y_bal = np.array([rows[i]["label"] for i in sorted(keep)], dtype=np.int64)
        methods: dict[str, Any] = {}
        all_scores: dict[str, np.ndarray] = {}
        for m, sc in scorers.items():
            s = np.asarray(sc.score(ev), dtype=np.float64)
            all_scores[m] = s
            methods[m] = score_metrics(y_bal, s[bal_rows], sc.threshold, dc.n_boot, cfg.seed)
            mean = s[bal_rows].mean(axis=1) if s.ndim == 2 else s[bal_rows]
            score_rows += [[name, rows[i]["qid"], int(rows[i]["label"]), m, float(v)] for i, v in zip(sorted(keep), mean)]
        result_sets[name] = {"n": int(y_bal.size), "n_per_class": bal.kept, "note": es.note, "counts": counts,
                             "methods": methods}
        if name == rc_set:
            correct = np.array([1 - rows[i]["label"] for i in rc_idx], dtype=np.int64)
            rc_rows = np.array([pos[i] for i in rc_idx])
            which = "every" if len(rc_idx) == len(located) else f"the first {len(rc_idx)} of {len(located)}"
            rc = {"set": name, "n": int(correct.size), "base_accuracy": float(correct.mean()),
                  "items": f"{which} judged, located held-out TriviaQA responses (refusals dropped), "
                           "in question order, not only the balanced set",
                  "methods": {m: selective_answering(correct, all_scores[m][rc_rows], dc.n_boot, cfg.seed)
                              for m in RC_METHODS if m in all_scores}}
    if not distributed.is_main():
        return {}
    order = [m for m in BASELINES if m in scorers]
    write_json(ctx.rundir.path("detect", "detect.json"), {
        "sets": result_sets, "methods": order, "skipped": skipped, "span_method": cfg.spans.method,
        "method_info": {m: {"description": BASELINES[m].description, **scorers[m].info} for m in order},
        "methods_not_fitted": method_errors,
        "accuracy_rule": "fitted probes: p > 0.5 (paper); 1-D scores: threshold fitted on the training answers; "
                         "accuracy_prevalence: threshold matching the label prevalence (PAPER.md §8.22)",
    })
    with atomic_path(ctx.rundir.path("detect", "scores.csv")) as tmp, tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["set", "qid", "label", "method", "score"])
        w.writerows(score_rows)
    write_json(ctx.rundir.path("detect", "risk_coverage.json"), rc or {
        "set": rc_set, "methods": {},
        "reason": skipped.get(rc_set, f"{rc_set} is not in detect.sets")})
    summary: dict[str, Any] = {"sets": list(result_sets), "skipped": skipped}
    for name, r in result_sets.items():
        for m in ("h_neurons", "random"):
            if m in r["methods"]:
                summary[f"{name}_{m}_acc"] = round(r["methods"][m]["accuracy"], 4)
    return summary
