"""Stage 3 — probe: the L1 path over C, the C rule, the H-Neurons and their stability.

Paper's C rule (arXiv 2512.01797 §4.4, ``probe.c_rule = "paper"``, the default): maximise held-out
accuracy (answer rows of held-out consistent questions, threshold 0.5) + TriviaQA accuracy of the
model with that C's H-Neurons suppressed (α = 0, greedy, questions from the end of the held-out
TriviaQA test pool, so they never meet detection's items). ``cv1se`` and ``stability``
(:mod:`hneurons.probe.rules`) use every labelled question instead; with ``probe.compare_rules`` all
three are computed and ``probe/rules.json`` says whether the existence claim holds under each.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.parquet as pq

from hneurons.core import distributed
from hneurons.core.store import FeatureStore, check_finite
from hneurons.data import load_dataset
from hneurons.errors import DataError, HNeuronsError
from hneurons.pipeline import Context
from hneurons.probe.design import build_rows, rows_from_stack
from hneurons.probe.estimator import HNeuronProbe
from hneurons.probe.path import PathPoint, default_C_grid, fit_path, select_C
from hneurons.probe.rules import count_interval, cv_one_se, stability_selection, suppression_gate
from hneurons.probe.stability import selection_stability
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


def _training_rows(ctx: Context, mode: str, fp: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Probe rows read in the store's dtype (float16: no float32 copy, no concatenation) and their labels."""
    store = FeatureStore(ctx.rundir.path("features", "train"))
    idx = store.index()
    if mode == "3-vs-1" and "other" not in idx["regions"]:  # answer rows stand in for the missing region
        qids, feats, labels = load_split(ctx, "train", fp)
        check_finite(feats, qids, int(idx["d_ff"]), regions=("answer",))
        X, y, groups = build_rows(feats["answer"], feats["answer"], labels, mode)
        return X, y, groups, labels, idx
    regions = ["answer"] if mode == "1-vs-1" else ["answer", "other"]
    qids, stack = store.load_rows(regions, expect_fingerprint=fp)
    table = pq.read_table(ctx.rundir.path("responses", "labelled.parquet"), columns=["qid", "label"]).to_pydict()
    label_of = dict(zip(table["qid"], table["label"]))
    labels = np.array([label_of[q] for q in qids], dtype=np.int64)
    X, y, groups = rows_from_stack(stack, labels, mode)
    return X, y, groups, labels, idx


def _probe_from_point(pt: PathPoint, cfg: Any, d_ff: int, n_features: int) -> HNeuronProbe:
    probe = HNeuronProbe(C=pt.C, mode=cfg.mode, solver=cfg.solver, standardize=cfg.standardize, d_ff=d_ff,
                         backend=cfg.backend)
    probe.coef_ = pt.coef.astype(np.float64)
    probe.intercept_ = float(pt.intercept)
    probe.classes_ = np.array([0, 1])
    probe.n_features_in_ = n_features
    probe.objective_ = pt.objective
    return probe


EXISTENCE_PER_MILLE = 1.0  # the report's existence rule: H-Neurons are fewer than 1 ‰ of all neurons


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


def _fit_kwargs(p: Any, d_ff: int) -> dict[str, Any]:
    return dict(mode=p.mode, solver=p.solver, standardize=p.standardize, d_ff=d_ff, backend=p.backend)


def _heldout_scores(ctx: Context, points: list[PathPoint], X: np.ndarray, labels: np.ndarray, fp: str | None):
    """Held-out accuracy and AUROC of every path point (training answer rows when there is no held-out split)."""
    if (ctx.rundir.path("features", "heldout") / "index.json").is_file():
        _, hfeats, hy = load_split(ctx, "heldout", fp)
        HX, held_source = hfeats["answer"], "heldout"
    else:
        HX, hy, held_source = X[: len(labels)], labels, "train (no held-out questions)"
    heldout_acc, heldout_auc = {}, {}
    for pt in points:
        s = HX.astype(np.float64) @ pt.coef + pt.intercept
        heldout_acc[pt.C] = accuracy(hy, (s > 0).astype(int))
        heldout_auc[pt.C] = auroc(hy, s) if len(np.unique(hy)) == 2 else float("nan")
    return heldout_acc, heldout_auc, held_source


def _suppression(ctx: Context, points: list[PathPoint]) -> tuple[dict[float, float] | None, float | None]:
    """TriviaQA accuracy with each C's H-Neurons at α = 0 (the paper's functional term), and unsuppressed."""
    if ctx.cfg.probe.suppression_questions <= 0:
        return None, None
    keys = [tuple(np.flatnonzero(pt.coef > 0).tolist()) for pt in points]
    accs = suppression_checks(ctx, keys)
    baseline = accs[()]
    supp = {pt.C: accs[key] for pt, key in zip(points, keys)}
    ctx.log(f"[probe] TriviaQA accuracy {baseline:.3f} unsuppressed; suppressed per C: "
            + ", ".join(f"{v:.3f}" for v in supp.values()))
    return supp, baseline


def _other_rules(ctx: Context, rows: tuple, usable: list[PathPoint], supp: dict | None, gate_on: bool,
                 d_ff: int) -> dict[str, dict]:
    """cv1se and stability outcomes (each, or why it was not computed); the chosen rule's failure is raised."""
    p = ctx.cfg.probe
    X, y, groups = rows
    Cs = [pt.C for pt in usable]
    kw = _fit_kwargs(p, d_ff)
    jobs = {"cv1se": lambda: cv_one_se(X, y, groups, Cs, p.cv_folds, ctx.cfg.seed,
                                       supp if gate_on else None, **kw),
            "stability": lambda: stability_selection(X, y, groups, Cs, p.stability_subsamples, p.stability_pi,
                                                     p.stability_ev_max, ctx.cfg.seed, **kw)}
    out: dict[str, dict] = {}
    for name, job in jobs.items():
        if name != p.c_rule and not p.compare_rules:
            continue
        try:
            out[name] = job()
        except HNeuronsError as exc:
            if name == p.c_rule:
                raise
            out[name] = {"C": None, "not_computed": str(exc)}
    return out


def _rule_summary(pt: PathPoint | None, neurons: np.ndarray, n_total: int, acc: dict, auc: dict) -> dict[str, Any]:
    """What the report's existence and detection claims need from one rule's choice."""
    if pt is None:
        return {"C": None, "existence_holds": None}
    ratio = neurons.size / n_total * 1000.0
    return {"C": pt.C, "n_positive": int(neurons.size), "ratio_per_mille": ratio,
            "existence_holds": bool(0 < neurons.size and ratio < EXISTENCE_PER_MILLE),
            "heldout_acc": acc[pt.C], "heldout_auroc": auc[pt.C]}


def _choose(ctx: Context, rows: tuple, points: list[PathPoint], scores: tuple, supp: dict | None,
            baseline: float | None, d_ff: int) -> tuple[PathPoint, np.ndarray, dict[str, Any]]:
    """The chosen point, its H-Neurons (flat) and the ``rules.json`` record of every rule."""
    p = ctx.cfg.probe
    acc, auc = scores
    gate_on, reason = suppression_gate(baseline, p.suppression_questions, p.suppression_min_correct)
    usable = [pt for pt in points if pt.n_positive > 0] or points
    at = {pt.C: pt for pt in points}
    outcomes = {"paper": {"C": select_C(usable, acc, supp), "suppression_used": supp is not None},
                **_other_rules(ctx, rows, usable, supp, gate_on, d_ff)}
    n_total = rows[0].shape[1]
    summary, sets = {}, {}
    for name, out in outcomes.items():
        pt = at.get(out["C"])
        pos = np.flatnonzero(pt.coef > 0) if pt is not None else np.empty(0, dtype=np.int64)
        if name == "stability" and pt is not None:  # the stable neurons that the full fit also weights positively
            pos = np.intersect1d(pos, np.asarray(out["stable"], dtype=np.int64))
            out["n_stable_not_positive_in_full_fit"] = int(len(out["stable"]) - pos.size)
        sets[name] = pos
        summary[name] = {**_rule_summary(pt, pos, n_total, acc, auc), "details": out}
    chosen = at[outcomes[p.c_rule]["C"]]
    held = [v["existence_holds"] for k, v in summary.items() if k != p.c_rule and v["existence_holds"] is not None]
    record = {"rule": p.c_rule, "rules": summary,
              "existence_holds_under_chosen": summary[p.c_rule]["existence_holds"],
              "existence_holds_under_others": all(held) if held else None,
              "suppression": {"used_by_paper": supp is not None, "used_by_cv1se": bool(gate_on and supp),
                              "resolvable": gate_on, "reason": reason, "baseline_acc": baseline,
                              "n_questions": p.suppression_questions, "min_correct": p.suppression_min_correct}}
    return chosen, sets[p.c_rule], record


def _write_h_neurons(ctx: Context, probe: HNeuronProbe, neurons: np.ndarray, d_ff: int, n_layers: int,
                     fp: str | None) -> list[tuple[int, int, float]]:
    order = neurons[np.argsort(-probe.coef_[neurons], kind="stable")]
    h = [(int(f) // d_ff, int(f) % d_ff, float(probe.coef_[f])) for f in order]
    by_layer = {str(layer): 0 for layer in range(n_layers)}
    for layer, _, _ in h:
        by_layer[str(layer)] += 1
    write_json(ctx.rundir.path("probe", "h_neurons.json"), {
        "C": probe.C, "mode": probe.mode, "model_fingerprint": fp, "d_ff": d_ff, "n_layers": n_layers,
        "n_neurons_total": probe.n_features_in_, "n_positive": len(h), "n_nonzero": probe.n_nonzero_,
        "ratio_per_mille": len(h) / probe.n_features_in_ * 1000.0, "intercept": probe.intercept_,
        "c_rule": ctx.cfg.probe.c_rule,
        "neurons": [{"layer": layer, "neuron": n, "weight": w} for layer, n, w in h], "by_layer": by_layer,
    })
    return h


def _stability(ctx: Context, rows: tuple, C: float, d_ff: int) -> dict[str, Any]:
    """Bootstrap stability at the chosen C, with the neuron count's resampling interval."""
    p = ctx.cfg.probe
    X, y, groups = rows
    stab: dict[str, Any] = {"C": C, "n_resamples": p.stability_resamples}
    if p.stability_resamples >= 2:
        s = selection_stability(X, y, C, n_resamples=p.stability_resamples, seed=ctx.cfg.seed, groups=groups,
                                **_fit_kwargs(p, d_ff))
        stab.update({"jaccard_mean": s["mean_jaccard"], "jaccard_std": s["sd_jaccard"],
                     "n_positive_per_resample": s["n_positive"], "n_positive_ci95": count_interval(s["n_positive"]),
                     "frequency": [{"layer": int(f) // d_ff, "neuron": int(f) % d_ff, "freq": float(v)}
                                   for f, v in s["selection_frequency"].items()]})
    write_json(ctx.rundir.path("probe", "stability.json"), stab)
    return stab


def run(ctx: Context) -> dict[str, Any]:
    p = ctx.cfg.probe
    if not distributed.is_main():  # rank 0 fits the probe; the others help check suppression
        if p.suppression_questions > 0:
            suppression_checks(ctx, None)
        return {}
    fp = ctx.model_fingerprint
    X, y, groups, labels, idx = _training_rows(ctx, p.mode, fp)
    d_ff, n_layers = int(idx["d_ff"]), int(idx["n_layers"])
    if len(np.unique(y)) < 2:
        raise DataError("the probe's training rows have one class only; the responses stage kept too few questions")
    Cs = list(p.Cs) if p.Cs else default_C_grid(X, y, n=p.n_Cs).tolist()
    ctx.log(f"[probe] {X.shape[0]} rows × {X.shape[1]} neurons ({p.mode}); C path {Cs[0]:.3g} … {Cs[-1]:.3g}")
    points = fit_path(X, y, Cs, **_fit_kwargs(p, d_ff))
    heldout_acc, heldout_auc, held_source = _heldout_scores(ctx, points, X, labels, fp)
    supp, baseline = _suppression(ctx, points)
    point, neurons, record = _choose(ctx, (X, y, groups), points, (heldout_acc, heldout_auc), supp, baseline, d_ff)
    chosen = point.C
    probe = _probe_from_point(point, p, d_ff, X.shape[1])
    probe.save(ctx.rundir.path("probe", "probe.safetensors"))
    h = _write_h_neurons(ctx, probe, neurons, d_ff, n_layers, fp)
    write_json(ctx.rundir.path("probe", "path.json"), {
        "points": [{"C": pt.C, "n_nonzero": pt.n_nonzero, "n_positive": pt.n_positive, "train_acc": pt.train_acc,
                    "heldout_acc": heldout_acc[pt.C], "heldout_auroc": heldout_auc[pt.C],
                    "suppression_acc": supp.get(pt.C) if supp else None,
                    "score": heldout_acc[pt.C] + (supp[pt.C] if supp else 0.0), "seconds": pt.seconds}
                   for pt in points],
        "selected_C": chosen, "heldout_source": held_source, "baseline_suppression_acc": baseline,
        "c_rule": p.c_rule,
        "rule": "maximise held-out accuracy + TriviaQA accuracy with the H-Neurons suppressed (α = 0)"
                if supp else "maximise held-out accuracy (suppression term off: probe.suppression_questions = 0)",
        "train_rows": int(X.shape[0]), "train_questions": int(len(labels)),
    })
    stab = _stability(ctx, (X, y, groups), chosen, d_ff)
    record["n_positive_ci95"] = stab.get("n_positive_ci95")
    record["n_positive_ci_resamples"] = p.stability_resamples
    write_json(ctx.rundir.path("probe", "rules.json"), record)
    return {"C": chosen, "c_rule": p.c_rule, "n_h_neurons": len(h), "ratio_per_mille": len(h) / X.shape[1] * 1000.0,
            "heldout_acc": heldout_acc[chosen], "heldout_auroc": heldout_auc[chosen],
            "existence_holds_under_others": record["existence_holds_under_others"]}
