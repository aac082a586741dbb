"""Origin stage: do the H-Neurons come from pre-training? (the paper, arXiv 2512.01797 §7)

Two analyses against ``origin.base_model``, the checkpoint the instruct model was tuned from:

* **parameter drift** (§7.2) — per-neuron cosine drift of the up rows and down columns, z-scored,
  ranked, and tested for the H-Neurons (``origin/drift.parquet``, ``drift`` in ``origin.json``).
  When both models are Hugging Face safetensors directories the weights are streamed tensor by
  tensor from disk; otherwise (GGUF) the loaded models are compared layer by layer;
* **backward transfer** (§7.1) — the base model answers ``"{question}\\nAnswer:"`` (stop at the
  first newline), answers are judged, spans located and balanced like the detection sets, the
  base model's own CETT features go to ``features/origin_<set>/``, and the instruct probe is
  applied unchanged; a random-neuron probe is transferred the same way as the control.

Without a base model the stage is recorded as not run, with the reason, in ``origin/origin.json``.
Resume: sampled base answers are appended to ``origin/samples_<set>.jsonl`` as chunks finish.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hneurons.core import distributed
from hneurons.config import Config
from hneurons.core.answer_store import answer_features
from hneurons.core.models import (
    LoadedModel,
    fingerprint,
    load_model,
    resolve_model_source,
)
from hneurons.detection.eval_sets import EVAL_SETS, balance
from hneurons.detection.methods import TrainData
from hneurons.detection.training import TrainFiles, read_labelled, read_train_data
from hneurons.errors import HNeuronsError
from hneurons.labelling.items import ITEM_COLUMNS, SpanRule, judge_and_locate, labelled_feature_items, write_items
from hneurons.origin.checkpoints import CheckpointSettings, TransferItems, follow_checkpoints, open_checkpoints
from hneurons.origin.drift import drift_test, neuron_drift, neuron_drift_from_files
from hneurons.origin.transfer import random_transfer_scores, transfer_scores, transfer_summary
from hneurons.origin.weights import SafetensorsWeights, config_value, tokenizer_difference
from hneurons.probe.h_neurons import load_h_neurons
from hneurons.rundir import atomic_path, file_fingerprint, fingerprint_of, read_json, write_json
from hneurons.stages._shared import answers_logged
from hneurons.text.locator import make_llm_locator
from hneurons.text.prompts import answer_stop, render_prompt

STAGE = "origin"
NO_BASE_REASON = (
    "no base model configured: the embedded SmolLM2-135M-Instruct has no installable base checkpoint "
    "(see README); pass --set origin.base_model=PATH"
)
INSTRUCT_METHOD = "h_neurons_full_l1"  # detect's method that applies the same probe unchanged


def _files(ctx: Any) -> dict[str, Path]:
    root = ctx.rundir.root
    return {"probe": root / "probe" / "probe.safetensors", "h_neurons": root / "probe" / "h_neurons.json",
            "labelled": root / "responses" / "labelled.parquet", "train_index": root / "features" / "train" / "index.json",
            "detect": root / "detect" / "detect.json"}


def _base_fingerprint(name: str) -> str:
    try:
        return fingerprint(str(resolve_model_source(name)))
    except HNeuronsError:
        return f"unresolved:{name}"  # run() reports the problem; here it only keys the skip check


def inputs(ctx: Any) -> dict[str, Any]:
    """Config that changes the result, both models' fingerprints and the files read."""
    cfg: Config = ctx.cfg
    o = cfg.origin
    if o.base_model is None and not o.checkpoints:
        return {"origin": cfg.section("origin")}
    d, r = cfg.detect, cfg.responses
    return {
        "origin": cfg.section("origin"),
        "seed": cfg.seed,
        "base": _base_fingerprint(o.base_model) if o.base_model is not None else None,
        "checkpoints": [_base_fingerprint(c) if Path(c).is_dir() else c for c in o.checkpoints],
        "model": ctx.model_fingerprint,
        "detect": {"temperature": d.temperature, "max_new_tokens": d.max_new_tokens, "per_class": d.per_class,
                   "min_per_class": d.min_per_class, "random_draws": d.random_draws, "n_boot": d.n_boot},
        "responses": {"top_k": r.top_k, "top_p": r.top_p, "refusal_phrases": r.refusal_phrases},
        "features": {"store_dtype": cfg.features.store_dtype},
        "probe_mode": cfg.probe.mode,
        "spans": cfg.section("spans"),
        "files": {k: file_fingerprint(p) if p.is_file() else None for k, p in _files(ctx).items() if k != "detect"},
    }


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def _safetensors_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and (
        (path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file())


def _load_base(ctx: Any) -> LoadedModel:
    m = ctx.cfg.model
    if resolve_model_source(ctx.cfg.origin.base_model) == resolve_model_source(m.name):
        return ctx.model  # base = the model itself (a test of the base-model path): load it once
    ctx.log(f"[origin] loading base model {ctx.cfg.origin.base_model}")
    return load_model(ctx.cfg.origin.base_model, dtype=m.dtype, device=m.device, device_map=m.device_map,
                      trust_remote_code=m.trust_remote_code)


def _instruct_tokenizer(ctx: Any, source: Path) -> Any:
    """The instruct tokenizer without loading the instruct weights (unless already loaded)."""
    if ctx._model is not None:
        return ctx._model.tokenizer
    from transformers import AutoTokenizer

    if source.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    return AutoTokenizer.from_pretrained(source, local_files_only=True,
                                         trust_remote_code=ctx.cfg.model.trust_remote_code)


# --------------------------------------------------------------------------------------------
# Training data for the random-neuron control
# --------------------------------------------------------------------------------------------


def _train_data(ctx: Any, probe: Any, d_ff: int, n_layers: int) -> TrainData:
    train, _, _ = read_train_data(TrainFiles(ctx.rundir.root), probe, ctx.cfg.probe.mode, ctx.model_fingerprint,
                                  (d_ff, n_layers))
    train.random_draws, train.seed = ctx.cfg.detect.random_draws, ctx.cfg.seed
    return train


# --------------------------------------------------------------------------------------------
# Base-model answers (resumable), features
# --------------------------------------------------------------------------------------------


def _sample(ctx: Any, base: LoadedModel, name: str, recs: list[Any]) -> dict[str, dict[str, Any]]:
    """One plain-prompt answer per question, appended to ``origin/samples_<set>.jsonl`` per chunk."""
    from hneurons.core.generation import HFBackend, SamplingParams

    cfg: Config = ctx.cfg
    dc, r = cfg.detect, cfg.responses
    params_key = fingerprint_of({"t": dc.temperature, "k": r.top_k, "p": r.top_p, "max": dc.max_new_tokens,
                                 "seed": cfg.seed, "model": base.fingerprint, "prompt": "plain"})
    params = SamplingParams(temperature=dc.temperature, top_k=r.top_k, top_p=r.top_p, max_new_tokens=dc.max_new_tokens,
                            n=1, seed=cfg.seed * 100_003, stop=answer_stop(chat=False))
    return answers_logged(ctx, ctx.rundir.path(STAGE, f"samples_{name}.jsonl"), params_key, recs,
                          lambda rec: render_prompt(base.tokenizer, rec.question.strip(), chat=False),
                          lambda: HFBackend(base.model, base.tokenizer, batch_size=r.batch_size),
                          params, f"[origin] {name}: base model answers")


def _instruct_auroc(ctx: Any, name: str) -> float | None:
    path = _files(ctx)["detect"]
    if not path.is_file():
        return None
    try:
        return read_json(path)["sets"][name]["methods"][INSTRUCT_METHOD]["auroc"]
    except (KeyError, TypeError):
        return None


def _transfer(ctx: Any, base: LoadedModel, probe: Any, h_idx: np.ndarray, train: TrainData | None) -> tuple[dict, dict]:
    from hneurons.data import load_dataset

    cfg: Config = ctx.cfg
    o, dc = cfg.origin, cfg.detect
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in o.sets:
        es = EVAL_SETS[name]
        if es.dataset is None:
            skipped[name] = f"{name} has no gold answers to judge base-model answers against; use triviaqa, nq_open or bioasq"
            continue
        recs = load_dataset(es.dataset, limit=o.n_questions)
        samples = _sample(ctx, base, name, recs)
        rule = SpanRule(base.tokenizer, False, cfg.spans.method, None,
                        make_llm_locator(cfg.spans, ctx.rundir.path("origin", "span_cache")))
        items = judge_and_locate(rule, es, recs, [samples[r.id]["text"] for r in recs], cfg.responses.refusal_phrases)
        located = [i for i, it in enumerate(items) if it.feature is not None]
        labels = np.array([items[i].label for i in located], dtype=np.int64)
        bal = balance(labels, dc.per_class, dc.min_per_class, cfg.seed)
        keep = {located[j] for j in bal.indices}
        rows = [{**it.row(), "balanced": i in keep} for i, it in enumerate(items)]
        if distributed.is_main():
            write_items(ctx.rundir.path(STAGE, f"items_{name}.parquet"), rows,
                        [c for c in ITEM_COLUMNS if c != "span_text"] + ["balanced"])
        counts = {"questions": len(recs), "refusals": sum(it.verdict == "refusal" for it in items),
                  "no_answer": sum(it.verdict == "no_answer" for it in items),
                  "unlocated": sum(it.label is not None and it.feature is None for it in items),
                  "available": bal.available}
        if bal.reason is not None:
            skipped[name] = bal.reason
            ctx.log(f"[origin] {name} skipped: {bal.reason}")
            continue
        X = answer_features(ctx.rundir.root / "features" / f"origin_{name}", base,
                            [items[located[j]].feature for j in bal.indices],
                            dtype=cfg.features.store_dtype, batch_size=cfg.features.batch_size)
        y = labels[bal.indices]
        rand = random_transfer_scores(train, X, h_idx, max(1, dc.random_draws), cfg.seed) if train is not None else None
        entry = transfer_summary(y, transfer_scores(probe, X), rand, dc.n_boot, cfg.seed)
        entry.update(instruct_auroc=_instruct_auroc(ctx, name), instruct_method=INSTRUCT_METHOD, counts=counts)
        results[name] = entry
        ctx.log(f"[origin] {name}: transfer AUROC {entry['auroc']:.3f} (n = {entry['n']})")
    return results, skipped


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------


def _final_weights(ctx: Any) -> tuple[Any, int]:
    """The final (instruct) model's weights, streamed when it is a safetensors directory, and its vocabulary size."""
    src = resolve_model_source(ctx.cfg.model.name)
    if _safetensors_dir(src):
        ws = SafetensorsWeights(src)
        return ws, int(config_value(ws.config, "vocab_size"))
    model_cfg = ctx.model.model.config
    text_cfg = getattr(model_cfg, "text_config", None) or model_cfg
    return ctx.model.layout, int(text_cfg.vocab_size)


def _heldout_items(ctx: Any, probe: Any) -> tuple[TransferItems | None, str]:
    """The run's held-out labelled answers (located spans) as the items every checkpoint's probe reads."""
    rows = [r for r in read_labelled(TrainFiles(ctx.rundir.root)).values()
            if r["split"] == "heldout" and r["span_status"] == "ok"]
    if len({r["label"] for r in rows}) < 2:
        return None, "no held-out answers of both classes (responses.heldout_fraction); transfer not measured"
    items = labelled_feature_items(ctx.model.tokenizer, ctx.cfg.model.prompt_format == "chat", rows)
    labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
    return TransferItems(probe, items, labels, ctx.rundir.root / "features" / "origin_checkpoints",
                         dtype=ctx.cfg.model.dtype, device=ctx.cfg.model.device,
                         batch_size=ctx.cfg.features.batch_size), f"{len(rows)} held-out answers of the final model"


def _checkpoints(ctx: Any) -> dict[str, Any]:
    """Drift to the final model and probe transfer per checkpoint; ``origin/checkpoints.json``."""
    from hneurons.probe.estimator import HNeuronProbe
    from hneurons.rundir import append_jsonl

    cfg: Config = ctx.cfg
    files = _files(ctx)
    final, vocab = _final_weights(ctx)
    try:
        checkpoints = open_checkpoints(final, vocab, cfg.origin.checkpoints)  # a wrong one stops here
        probe = HNeuronProbe.load(files["probe"])
        transfer, items_note = _heldout_items(ctx, probe)
        h_idx = load_h_neurons(files["h_neurons"], final.d_ff, final.n_layers)
        log_path = ctx.rundir.path(STAGE, "checkpoints.jsonl")
        log_path.unlink(missing_ok=True)
        settings = CheckpointSettings(cfg.origin.drift_scope, cfg.origin.permutations, cfg.detect.n_boot, cfg.seed)
        entries = follow_checkpoints(final, checkpoints, h_idx, settings, transfer,
                                     on_result=lambda e: append_jsonl(log_path, [e]))
    finally:
        if isinstance(final, SafetensorsWeights):
            final.close()
    doc = {"status": "done", "final_fingerprint": ctx.model_fingerprint, "items": items_note, "checkpoints": entries}
    write_json(ctx.rundir.path(STAGE, "checkpoints.json"), doc)
    return {e["name"]: {"mean_rank_h": e["drift"]["mean_rank_h"],
                        "auroc": e["transfer"]["auroc"] if e["transfer"] else None} for e in entries}


def run(ctx: Any) -> dict[str, Any]:
    """Drift and transfer against the configured base model (origin.json, drift.parquet) and along
    the configured training checkpoints (checkpoints.json)."""
    o = ctx.cfg.origin
    # checkpoints are read weight by weight, not sharded: rank 0 follows them
    out = {"checkpoints": _checkpoints(ctx)} if o.checkpoints and distributed.is_main() else {}
    if o.base_model is None:
        if distributed.is_main():
            write_json(ctx.rundir.path(STAGE, "origin.json"), {"status": "not run", "reason": NO_BASE_REASON})
        return {"status": "not run", "reason": NO_BASE_REASON, **out}
    return {**_base_analysis(ctx), **out}


def _base_analysis(ctx: Any) -> dict[str, Any]:
    cfg: Config = ctx.cfg
    o = cfg.origin
    out_json = ctx.rundir.path(STAGE, "origin.json")
    EVAL_SETS.check(o.sets, "origin.sets")
    scope = o.drift_scope
    files = _files(ctx)
    from hneurons.probe.estimator import HNeuronProbe

    probe = HNeuronProbe.load(files["probe"])
    inst_src = resolve_model_source(cfg.model.name)
    base_src = resolve_model_source(o.base_model)

    base: LoadedModel | None = None
    if _safetensors_dir(inst_src) and _safetensors_dir(base_src):
        ctx.log(f"[origin] drift: streaming {inst_src.name} vs {base_src.name} from safetensors")
        drift = neuron_drift_from_files(inst_src, base_src, scope=scope, progress=True)
        drift_source = "safetensors"
    else:
        base = _load_base(ctx)
        drift = neuron_drift(ctx.model.layout, base.layout, scope=scope, progress=True)
        drift_source = "loaded models"
    h_idx = load_h_neurons(files["h_neurons"], drift.d_ff, drift.n_layers)
    test = drift_test(drift, h_idx, o.permutations, cfg.seed)
    if distributed.is_main():
        with atomic_path(ctx.rundir.path(STAGE, "drift.parquet")) as tmp:
            import pyarrow.parquet as pq

            pq.write_table(drift.table(h_idx), tmp)
    ctx.log(f"[origin] drift: mean normalised rank of {test['n_h']} H-Neurons {test['mean_rank_h']:.3f} "
            f"(t-test p {test['t_p']}, permutation p {test['perm_p']})")

    if base is None:
        base = _load_base(ctx)
    note = tokenizer_difference(_instruct_tokenizer(ctx, inst_src), base.tokenizer)
    if note:
        ctx.log(f"[origin] warning: {note}; base answers are prompted in plain text, so this is usually harmless")
    try:
        train: TrainData | None = _train_data(ctx, probe, drift.d_ff, drift.n_layers)
    except HNeuronsError as exc:
        train = None
        ctx.log(f"[origin] random-neuron transfer control skipped: {exc}")
    transfer, skipped = _transfer(ctx, base, probe, h_idx, train)
    if not distributed.is_main():  # the other ranks helped sample and extract; rank 0 writes
        return {}

    write_json(out_json, {
        "status": "done", "reason": None,
        "base_model": {"name": base.name, "source": base.source, "fingerprint": base.fingerprint},
        "instruct_fingerprint": ctx.model_fingerprint,
        "tokenizer_note": note,
        "transfer": transfer, "skipped": skipped,
        "drift": {**test, "source": drift_source},
    })
    return {"drift_mean_rank_h": test["mean_rank_h"], "drift_t_p": test["t_p"], "drift_perm_p": test["perm_p"],
            "transfer_auroc": {k: v["auroc"] for k, v in transfer.items()}, "skipped": skipped}
