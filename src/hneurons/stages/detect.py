"""Detect stage: the H-Neuron probe and its baselines on held-out sets (the paper, arXiv 2512.01797 §5).

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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hneurons.core import distributed
from hneurons.config import Config
from hneurons.core.answer_store import answer_features
from hneurons.core.store import FeatureStore
from hneurons.detection.eval_sets import EVAL_SETS, EvalSet, balance, questions
from hneurons.detection.evaluate import evaluate_methods, fit_methods, mean_scores, risk_coverage
from hneurons.detection.methods import BASELINES, EvalData, TrainData
from hneurons.detection.token_stats import token_stats
from hneurons.detection.training import TrainFiles, read_train_data
from hneurons.labelling.items import (
    ITEM_COLUMNS,
    JudgedItem,
    SpanRule,
    judge_and_locate,
    labelled_feature_items,
    write_items,
)
from hneurons.labelling.verdicts import qa_llm_judge
from hneurons.rundir import atomic_path, fingerprint_of, write_json
from hneurons.stages._shared import answers_logged, sampling_backend
from hneurons.text.locator import make_llm_locator
from hneurons.text.prompts import user_text


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
        "files": TrainFiles(ctx.rundir.root).fingerprints(),
    }


def _training_data(ctx: Any) -> TrainData:
    from hneurons.probe.estimator import HNeuronProbe

    cfg: Config = ctx.cfg
    files = TrainFiles(ctx.rundir.root)
    lm = ctx.model
    probe = HNeuronProbe.load(files.probe)
    train, qids, rows = read_train_data(files, probe, cfg.probe.mode, lm.fingerprint,
                                        (lm.layout.d_ff, lm.layout.n_layers))
    layer, arrays = FeatureStore(files.store).load_stats()
    items = labelled_feature_items(ctx.model.tokenizer, cfg.model.prompt_format == "chat", [rows[q] for q in qids])
    train.stats = token_stats(items, layer, arrays)
    train.random_draws, train.seed = cfg.detect.random_draws, cfg.seed
    return train


def _questions(ctx: Any, es: EvalSet) -> list[Any]:
    dc = ctx.cfg.detect
    n = dc.n_questions if es.dataset is not None or dc.nonexist_questions is None else dc.nonexist_questions
    return questions(es, n, ctx.rundir.path("detect", "nonexist.jsonl"), ctx.cfg.seed)


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


def _judged(ctx: Any, es: EvalSet, recs: list[Any]) -> list[JudgedItem]:
    """Every sampled answer of the set judged and, when labelled, located."""
    cfg: Config = ctx.cfg
    samples = _sample(ctx, es.name, recs)
    rule = SpanRule(ctx.model.tokenizer, cfg.model.prompt_format == "chat", cfg.spans.method, cfg.responses.suffix,
                    make_llm_locator(cfg.spans, ctx.rundir.path("detect", "span_cache")))
    llm = qa_llm_judge(cfg.responses, ctx.rundir.path("detect", "judge_cache")) if es.refusals == "drop" else None
    return judge_and_locate(rule, es, recs, [samples[rec.id]["text"] for rec in recs], cfg.responses.refusal_phrases,
                            llm.judge_qa if llm is not None else None)


@dataclass
class _Results:
    """What the sets add up to: ``detect.json``'s sets and skips, ``scores.csv`` rows, risk–coverage."""

    rc_set: str
    sets: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    score_rows: list[list[Any]] = field(default_factory=list)
    rc: dict[str, Any] | None = None


def _evaluate_set(ctx: Any, es: EvalSet, train: TrainData, scorers: dict[str, Any], res: _Results) -> None:
    """Judge, balance, extract features and score one set; add its entry (or why it was skipped)."""
    cfg: Config = ctx.cfg
    dc = cfg.detect
    recs = _questions(ctx, es)
    items = _judged(ctx, es, recs)
    located = [i for i, it in enumerate(items) if it.feature is not None]
    bal = balance(np.array([items[i].label for i in located], dtype=np.int64), dc.per_class, dc.min_per_class, cfg.seed)
    keep = sorted(int(located[j]) for j in bal.indices)
    rows = [{**it.row(), "balanced": i in set(keep)} for i, it in enumerate(items)]
    if distributed.is_main():
        write_items(ctx.rundir.path("detect", f"items_{es.name}.parquet"), rows, [*ITEM_COLUMNS, "balanced"])
    counts = {"questions": len(recs), "refusals": sum(it.verdict == "refusal" for it in items),
              "no_answer": sum(it.verdict == "no_answer" for it in items),
              "judge_errors": sum(it.verdict == "error" for it in items),
              "unlocated": sum(it.label is not None and it.span_status != "ok" for it in items),
              "available": bal.available}
    if bal.reason is not None:
        res.skipped[es.name] = bal.reason
        ctx.log(f"[detect] {es.name} skipped: {bal.reason}")
        return
    # TriviaQA keeps the first risk_coverage_items located items (all by default) for selective
    # answering, in question order so their accuracy is the model's; other sets only the balanced ones.
    rc_idx = located[:dc.risk_coverage_items or None] if es.name == res.rc_set else []
    feat_idx = sorted(set(keep).union(rc_idx))
    feat_items = [items[i].feature for i in feat_idx]
    store = ctx.rundir.root / "features" / f"detect_{es.name}"
    # one forward per item gives the CETT features and the token statistics of the baselines
    answer = answer_features(store, ctx.model, feat_items, dtype=cfg.features.store_dtype,
                             batch_size=cfg.features.batch_size, stats_layer=train.stats.residual_layer)
    if not distributed.is_main():  # the other ranks helped sample and extract; rank 0 scores
        return
    ev = EvalData(answer, token_stats(feat_items, *FeatureStore(store).load_stats()))
    pos = {i: p for p, i in enumerate(feat_idx)}
    y = np.array([items[i].label for i in keep], dtype=np.int64)
    scored = evaluate_methods(scorers, ev, np.array([pos[i] for i in keep]), y, dc.n_boot, cfg.seed)
    for m, s in scored.scores.items():
        mean = mean_scores(s[[pos[i] for i in keep]])
        res.score_rows += [[es.name, items[i].qid, int(items[i].label), m, float(v)] for i, v in zip(keep, mean)]
    res.sets[es.name] = {"n": int(y.size), "n_per_class": bal.kept, "note": es.note, "counts": counts,
                         "methods": scored.metrics}
    if es.name == res.rc_set:
        correct = np.array([1 - items[i].label for i in rc_idx], dtype=np.int64)
        which = "every" if len(rc_idx) == len(located) else f"the first {len(rc_idx)} of {len(located)}"
        res.rc = {"set": es.name, "n": int(correct.size), "base_accuracy": float(correct.mean()),
                  "items": f"{which} judged, located held-out TriviaQA responses (refusals dropped), "
                           "in question order, not only the balanced set",
                  "methods": risk_coverage(correct, scored.scores, np.array([pos[i] for i in rc_idx]),
                                           dc.n_boot, cfg.seed)}


def _write(ctx: Any, res: _Results, scorers: dict[str, Any], method_errors: dict[str, str]) -> None:
    order = [m for m in BASELINES if m in scorers]
    write_json(ctx.rundir.path("detect", "detect.json"), {
        "sets": res.sets, "methods": order, "skipped": res.skipped, "span_method": ctx.cfg.spans.method,
        "method_info": {m: {"description": BASELINES[m].description, **scorers[m].info} for m in order},
        "methods_not_fitted": method_errors,
        "accuracy_rule": "fitted probes: p > 0.5 (paper); 1-D scores: threshold fitted on the training answers; "
                         "accuracy_prevalence: threshold matching the label prevalence (removes the 3-vs-1 calibration shift)",
    })
    with atomic_path(ctx.rundir.path("detect", "scores.csv")) as tmp, tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["set", "qid", "label", "method", "score"])
        w.writerows(res.score_rows)
    write_json(ctx.rundir.path("detect", "risk_coverage.json"), res.rc or {
        "set": res.rc_set, "methods": {},
        "reason": res.skipped.get(res.rc_set, f"{res.rc_set} is not in detect.sets")})


def run(ctx: Any) -> dict[str, Any]:
    """Evaluate every method on every configured set; write detect.json, scores.csv, risk_coverage.json."""
    dc = ctx.cfg.detect
    EVAL_SETS.check(dc.sets, "detect.sets")
    if not dc.sets:
        return {"status": "not run", "reason": "detect.sets is empty"}
    train = _training_data(ctx)
    scorers, method_errors = fit_methods(train, ctx.log)
    # selective answering is measured on held-out TriviaQA (the smoke preset's stand-in is "smoke")
    res = _Results(next((n for n in ("triviaqa", "smoke") if n in dc.sets), "triviaqa"))
    for name in dc.sets:
        _evaluate_set(ctx, EVAL_SETS[name], train, scorers, res)
    if not distributed.is_main():
        return {}
    _write(ctx, res, scorers, method_errors)
    summary: dict[str, Any] = {"sets": list(res.sets), "skipped": res.skipped}
    for name, r in res.sets.items():
        for m in ("h_neurons", "random"):
            if m in r["methods"]:
                summary[f"{name}_{m}_acc"] = round(r["methods"][m]["accuracy"], 4)
    return summary
