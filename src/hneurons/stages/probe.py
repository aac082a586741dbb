"""Stage 3 — probe: the L1 path over C, the paper's C rule, the H-Neurons and their stability.

C rule (PAPER.md §4.4): maximise held-out accuracy (answer rows of held-out consistent questions,
threshold 0.5) + TriviaQA accuracy of the model with that C's H-Neurons suppressed (α = 0, greedy,
questions from the end of the held-out TriviaQA test pool, so they never meet detection's items).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.parquet as pq

from hneurons.core import distributed
from hneurons.core.store import FeatureStore, check_finite
from hneurons.data import load_dataset
from hneurons.errors import DataError
from hneurons.pipeline import Context
from hneurons.probe.estimator import (
    HNeuronProbe,
    PathPoint,
    build_rows,
    default_C_grid,
    fit_path,
    select_C,
    selection_stability,
)
from hneurons.probe.suppression import suppression_accuracy
from hneurons.rundir import file_fingerprint, write_json
from hneurons.stats import accuracy, auroc

SUPPRESSION_POOL = "triviaqa_test"


def inputs(ctx: Context) -> dict[str, Any]:
    fps = {s: file_fingerprint(p) for s in ("train", "heldout")
           if (p := ctx.rundir.path("features", s) / "index.json").is_file()}
    return {"probe": ctx.cfg.section("probe"), "features": fps, "model": ctx.model_fingerprint, "seed": ctx.cfg.seed,
            "labelled": file_fingerprint(ctx.rundir.path("responses", "labelled.parquet"))}


def load_split(ctx: Context, split: str, fingerprint: str | None = None) -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
    """Features and labels (1 = hallucinated) of one split of the labelled responses."""
    qids, feats = FeatureStore(ctx.rundir.path("features", split)).load(expect_fingerprint=fingerprint)
    table = pq.read_table(ctx.rundir.path("responses", "labelled.parquet"), columns=["qid", "label"]).to_pydict()
    label_of = dict(zip(table["qid"], table["label"]))
    return qids, feats, np.array([label_of[q] for q in qids], dtype=np.int64)


def _probe_from_point(pt: PathPoint, cfg: Any, d_ff: int, n_features: int) -> HNeuronProbe:
    probe = HNeuronProbe(C=pt.C, mode=cfg.mode, solver=cfg.solver, standardize=cfg.standardize, d_ff=d_ff)
    probe.coef_ = pt.coef.astype(np.float64)
    probe.intercept_ = float(pt.intercept)
    probe.classes_ = np.array([0, 1])
    probe.n_features_in_ = n_features
    probe.objective_ = pt.objective
    return probe


def suppression_checks(ctx: Context, keys: list[tuple[int, ...]] | None) -> dict[tuple[int, ...], float]:
    """TriviaQA accuracy with each neuron set of rank 0's ``keys`` suppressed, ``()`` = unsuppressed.

    Every rank joins: rank 0 fits the path and names the sets, each rank checks its share of
    them (a whole set each, so the batches are the one-process ones) and all get every result.
    """
    p = ctx.cfg.probe
    keys = distributed.broadcast(keys)
    unique = [(), *(k for k in dict.fromkeys(keys) if k)]
    questions = load_dataset(SUPPRESSION_POOL)[-p.suppression_questions:]
    kw = dict(max_new_tokens=p.suppression_max_new_tokens, batch_size=ctx.cfg.responses.batch_size,
              chat=ctx.cfg.model.prompt_format == "chat")
    mine = [suppression_accuracy(ctx.model, questions, list(k), alpha=0.0, **kw) for k in distributed.shard(unique)]
    return dict(zip(unique, distributed.gather_sharded(mine)))


def run(ctx: Context) -> dict[str, Any]:
    p = ctx.cfg.probe
    if not distributed.is_main():  # rank 0 fits the probe; the others help check suppression
        if p.suppression_questions > 0:
            suppression_checks(ctx, None)
        return {}
    fp = ctx.model_fingerprint
    qids, feats, labels = load_split(ctx, "train", fp)
    idx = FeatureStore(ctx.rundir.path("features", "train")).index()
    d_ff, n_layers = int(idx["d_ff"]), int(idx["n_layers"])
    check_finite(feats, qids, d_ff, regions=("answer",))
    X, y, groups = build_rows(feats["answer"], feats.get("other", feats["answer"]), labels, p.mode)
    del feats
    if len(np.unique(y)) < 2:
        raise DataError("the probe's training rows have one class only; the responses stage kept too few questions")
    Cs = list(p.Cs) if p.Cs else default_C_grid(X, y, n=p.n_Cs).tolist()
    ctx.log(f"[probe] {X.shape[0]} rows × {X.shape[1]} neurons ({p.mode}); C path {Cs[0]:.3g} … {Cs[-1]:.3g}")
    points = fit_path(X, y, Cs, mode=p.mode, solver=p.solver, standardize=p.standardize, d_ff=d_ff)

    held_path = ctx.rundir.path("features", "heldout") / "index.json"
    if held_path.is_file():
        hq, hfeats, hy = load_split(ctx, "heldout", fp)
        HX, held_source = hfeats["answer"], "heldout"
    else:  # too few consistent questions for a held-out split: score the training answer rows
        HX, hy, held_source = X[: len(labels)], labels, "train (no held-out questions)"
    heldout_acc, heldout_auc = {}, {}
    for pt in points:
        s = HX.astype(np.float64) @ pt.coef + pt.intercept
        heldout_acc[pt.C] = accuracy(hy, (s > 0).astype(int))
        heldout_auc[pt.C] = auroc(hy, s) if len(np.unique(hy)) == 2 else float("nan")

    supp: dict[float, float] | None = None
    baseline = None
    if p.suppression_questions > 0:
        keys = [tuple(np.flatnonzero(pt.coef > 0).tolist()) for pt in points]
        accs = suppression_checks(ctx, keys)
        baseline = accs[()]
        supp = {pt.C: accs[key] for pt, key in zip(points, keys)}
        ctx.log(f"[probe] TriviaQA accuracy {baseline:.3f} unsuppressed; suppressed per C: "
                + ", ".join(f"{v:.3f}" for v in supp.values()))
    usable = [pt for pt in points if pt.n_positive > 0] or points
    chosen = select_C(usable, heldout_acc, supp)
    point = next(pt for pt in points if pt.C == chosen)
    probe = _probe_from_point(point, p, d_ff, X.shape[1])
    probe.save(ctx.rundir.path("probe", "probe.safetensors"))

    h = probe.h_neurons_
    by_layer = {str(layer): 0 for layer in range(n_layers)}
    for layer, _, _ in h:
        by_layer[str(layer)] += 1
    write_json(ctx.rundir.path("probe", "h_neurons.json"), {
        "C": chosen, "mode": p.mode, "model_fingerprint": fp, "d_ff": d_ff, "n_layers": n_layers,
        "n_neurons_total": X.shape[1], "n_positive": probe.n_positive_, "n_nonzero": probe.n_nonzero_,
        "ratio_per_mille": probe.ratio_per_mille_, "intercept": probe.intercept_,
        "neurons": [{"layer": layer, "neuron": n, "weight": w} for layer, n, w in h], "by_layer": by_layer,
    })
    write_json(ctx.rundir.path("probe", "path.json"), {
        "points": [{"C": pt.C, "n_nonzero": pt.n_nonzero, "n_positive": pt.n_positive, "train_acc": pt.train_acc,
                    "heldout_acc": heldout_acc[pt.C], "heldout_auroc": heldout_auc[pt.C],
                    "suppression_acc": supp.get(pt.C) if supp else None,
                    "score": heldout_acc[pt.C] + (supp[pt.C] if supp else 0.0), "seconds": pt.seconds}
                   for pt in points],
        "selected_C": chosen, "heldout_source": held_source, "baseline_suppression_acc": baseline,
        "rule": "maximise held-out accuracy + TriviaQA accuracy with the H-Neurons suppressed (α = 0)"
                if supp else "maximise held-out accuracy (suppression term off: probe.suppression_questions = 0)",
        "train_rows": int(X.shape[0]), "train_questions": int(len(labels)),
    })
    stab: dict[str, Any] = {"C": chosen, "n_resamples": p.stability_resamples}
    if p.stability_resamples >= 2:
        s = selection_stability(X, y, chosen, n_resamples=p.stability_resamples, seed=ctx.cfg.seed, groups=groups,
                                mode=p.mode, solver=p.solver, standardize=p.standardize, d_ff=d_ff)
        stab.update({"jaccard_mean": s["mean_jaccard"], "jaccard_std": s["sd_jaccard"],
                     "n_positive_per_resample": s["n_positive"],
                     "frequency": [{"layer": int(f) // d_ff, "neuron": int(f) % d_ff, "freq": float(v)}
                                   for f, v in s["selection_frequency"].items()]})
    write_json(ctx.rundir.path("probe", "stability.json"), stab)
    return {"C": chosen, "n_h_neurons": probe.n_positive_, "ratio_per_mille": probe.ratio_per_mille_,
            "heldout_acc": heldout_acc[chosen], "heldout_auroc": heldout_auc[chosen]}
