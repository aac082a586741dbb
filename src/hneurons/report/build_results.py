"""Data for the sections of the pipeline's results: H-Neurons (probe), detection, risk–coverage,
intervention and origin. Each builder takes the :class:`~hneurons.report.run.Run` and returns the
context of its template (``templates/sections/<id>.html``), or raises
:class:`~hneurons.report.run.NotRun`; parts of a section that are missing carry their own reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hneurons.detection.methods import TRIVIAL_BASELINES
from hneurons.report import build_hooks, figures
from hneurons.report.fmt import ci, count, isnum, num, pct, pct_ci, sig
from hneurons.report.build_explorer import neuron_link
from hneurons.report.html import Cell, Table
from hneurons.report.run import NotRun, Run

__all__ = ["detect", "intervene", "origin", "probe", "risk"]

RATE_WARN = 0.05  # parse failures or truncations above this share of items are flagged
TOP_NEURONS = 30  # H-Neurons listed by weight


def _path(path: dict[str, Any]) -> dict[str, Any]:
    points = sorted(path["points"], key=lambda p: p.get("C") or 0)
    rows = [[sig(p.get("C")), count(p.get("n_nonzero")), count(p.get("n_positive")), pct(p.get("train_acc")),
             pct(p.get("heldout_acc")), num(p.get("heldout_auroc")), pct(p.get("suppression_acc")), num(p.get("score"))]
            for p in points]
    classes = ["hrow" if p.get("C") == path.get("selected_C") else "" for p in points]
    return {"figure": figures.C_path(path["points"], path.get("selected_C")), "rule": path.get("rule", "—"),
            "baseline": path.get("baseline_suppression_acc"),
            "table": Table.of(["C", "non-zero", "positive", "train acc %", "held-out acc %", "held-out AUROC",
                               "suppression acc %", "score"], rows, range(8), classes)}


def probe(run: Run) -> dict[str, Any]:
    """The chosen probe, its regularisation path, where the H-Neurons sit and how stable they are."""
    h = run.need("probe", "h_neurons.json")
    path, path_reason = run.load("probe", "path.json")
    stab, stab_reason = run.load("probe", "stability.json")
    neurons = h.get("neurons") or []
    summary = Table.of(["", "value"], [
        ["chosen C", sig(h.get("C"))], ["mode", str(h.get("mode", "—"))],
        ["H-Neurons (positive weight)", count(h.get("n_positive"))], ["non-zero weights", count(h.get("n_nonzero"))],
        ["neurons in the model", count(h.get("n_neurons_total"))], ["ratio (‰)", num(h.get("ratio_per_mille"), 3)]], [1])
    freq = {(int(r["layer"]), int(r["neuron"])): r.get("freq") for r in (stab or {}).get("frequency", [])}
    top = neurons[:TOP_NEURONS]
    hset = {(int(n["layer"]), int(n["neuron"])) for n in neurons}
    return {
        "summary": summary,
        "path": _path(path) if path and path.get("points") else None,
        "path_reason": path_reason or "path.json has no points",
        "by_layer": figures.layer_distribution(h["by_layer"]) if h.get("by_layer") else None,
        "stability": {"n": count(stab.get("n_resamples")), "C": sig(stab.get("C")), "mean": stab.get("jaccard_mean"),
                      "sd": stab.get("jaccard_std")} if stab else None,
        "stability_reason": stab_reason or "",
        "frequency": figures.selection_frequency(stab["frequency"], hset) if stab and stab.get("frequency") else None,
        "n_neurons": len(neurons),
        "rules": build_hooks.rules(run),
        "neurons": Table.of(["neuron", "weight", "selection freq."],
                            [[neuron_link(n), num(n.get("weight"), 4), num(freq.get((int(n["layer"]), int(n["neuron"]))), 2)]
                             for n in top], [1, 2]) if top else None,
    }


def _metric_table(sets: Mapping[str, Any], methods: list[str], metric: str, fmt: Callable[[Any], str]) -> Table:
    rows, classes = [], []
    for m in methods:
        row: list[str | Cell] = [m]
        for s in sets:
            e = (sets[s].get("methods") or {}).get(m) or {}
            sd = e.get(f"{metric}_sd")
            row.append(Cell(f"{fmt(e.get(metric))} {ci(e.get(f'{metric}_ci'), fmt)}",
                            f"sd {fmt(sd)}, {e.get('draws')} draws" if isnum(sd) else ""))
        rows.append(row)
        classes.append("confound" if m in TRIVIAL_BASELINES else "hrow" if m == "h_neurons" else "")
    return Table.of(["method", *sets], rows, range(1, len(sets) + 1), classes)


def detect(run: Run) -> dict[str, Any]:
    """Per evaluation set: sizes, then AUROC and accuracy of every method with CIs and figures."""
    det = run.need("detect", "detect.json")
    sets = det.get("sets") or {}
    methods = list(det.get("methods") or sorted({m for d in sets.values() for m in d.get("methods", {})}))
    sizes = Table.of(["set", "n", "faithful / hallucinated", "dropped: refusals / no answer", "note"], [
        [s, count(d.get("n")),
         f"{count((d.get('n_per_class') or {}).get('0'))} / {count((d.get('n_per_class') or {}).get('1'))}",
         f"{count((d.get('counts') or {}).get('refusals'))} / {count((d.get('counts') or {}).get('no_answer'))}",
         str(d.get("note") or "")] for s, d in sets.items()], [1, 2, 3])
    metrics = [{"title": title, "metric": metric, "table": _metric_table(sets, methods, metric, fmt),
                "figure": figures.detection_bars(sets, methods, metric)}
               for metric, title, fmt in (("auroc", "AUROC", num), ("accuracy", "Accuracy (%)", pct))] if sets else []
    info = det.get("method_info") or {}
    return {"sizes": sizes if sets else None, "metrics": metrics,
            "skipped": {str(s): str(why) for s, why in (det.get("skipped") or {}).items()},
            "not_fitted": {str(m): str(why) for m, why in (det.get("methods_not_fitted") or {}).items()},
            "methods": Table.of(["method", "what it scores"],
                                [[m, str((info.get(m) or {}).get("description", ""))] for m in methods if m in info])
            if info else None,
            "accuracy_rule": det.get("accuracy_rule"),
            "judge": build_hooks.agreement(build_hooks.card(), "triviaqa")}


def risk(run: Run) -> dict[str, Any]:
    """Accuracy of the answers kept when abstaining on the most hallucination-like first."""
    rc = run.need("detect", "risk_coverage.json")
    ms = rc.get("methods") or {}
    if not ms:
        raise NotRun(str(rc.get("reason") or "risk_coverage.json has no methods"))
    det, _ = run.load("detect", "detect.json")
    listed = (det or {}).get("methods") or []
    order = [m for m in listed if m in ms] + [m for m in ms if m not in listed]
    rows = [[m, num(ms[m].get("aurc")), ci(ms[m].get("aurc_ci")),
             f"{num(ms[m]['aurc_draws_mean'])} ± {num(ms[m].get('aurc_draws_sd'))}"
             if isnum(ms[m].get("aurc_draws_mean")) else ""] for m in order]
    return {"set": str(rc.get("set", "—")), "n": rc.get("n"), "base_accuracy": rc.get("base_accuracy"),
            "figure": figures.risk_coverage(ms, order),
            "table": Table.of(["method", "AURC", "95% CI", "per random draw (mean ± sd)"], rows, [1, 2, 3])}


def _rates(e: Mapping[str, Any]) -> dict[str, float | None]:
    """Parse failures and truncations as shares of the items (n counts the judged ones only)."""
    n, n_items = e.get("n"), e.get("n_items")
    if not isnum(n_items) and isnum(n):
        n_items = n + (e.get("parse_failures") if isnum(e.get("parse_failures")) else 0)
    return {k: (e.get(k) / n_items if isnum(e.get(k)) and isnum(n_items) and n_items else None)
            for k in ("parse_failures", "truncated")}


def _alpha_table(d: Mapping[str, Any]) -> tuple[Table, str]:
    """Compliance per α for both conditions, and which rates pass :data:`RATE_WARN`."""
    alphas = sorted({*(d.get("H") or {}), *(d.get("random") or {})}, key=float)
    rows, warn = [], {}
    for a in alphas:
        row = [str(a)]
        for cond in ("H", "random"):
            e = (d.get(cond) or {}).get(a) or {}
            rate = _rates(e)
            for k, r in rate.items():
                if isnum(r) and r > RATE_WARN:
                    warn.setdefault((cond, k.replace("_", " ")), []).append((a, r))
            row += [f"{pct(e.get('compliance'))} {pct_ci(e.get('ci'))}", count(e.get("n")),
                    pct(rate["parse_failures"]), pct(rate["truncated"])]
        rows.append(row)
    text = "; ".join(f"{cond} {kind} at α = {', '.join(a for a, _ in hits)} (up to {pct(max(r for _, r in hits))}%)"
                     for (cond, kind), hits in warn.items())
    table = Table.of(["α", "H compliance %", "n judged", "parse fail %", "truncated %", "random compliance %",
                      "n judged", "parse fail %", "truncated %"], rows, range(9),
                     ["hrow" if float(a) == 1.0 else "" for a in alphas])
    return table, text


def intervene(run: Run) -> dict[str, Any]:
    """Compliance against α on every benchmark: curves, slopes and the per-α counts."""
    iv = run.need("intervene", "intervene.json")
    benches = build_hooks.compliance_benchmarks(iv.get("benchmarks"))
    qa_benches = sorted(set(iv.get("benchmarks") or {}) - set(benches))
    if not benches:
        raise NotRun("intervene.json lists no compliance benchmarks" + (
            f" (the {', '.join(qa_benches)} family is in the qa section)" if qa_benches else ""))
    slopes, entries = [], build_hooks.card()
    for b, d in benches.items():
        sl, lsq = d.get("slope") or {}, d.get("slope_lsq") or {}
        sources = ", ".join(f"{k} {v}" for k, v in sorted((d.get("judge_sources") or {}).items()))
        slopes.append([b, str(d.get("description", "")), count(d.get("n")), str(d.get("judge", "—")),
                       build_hooks.agreement(entries, build_hooks.BENCH_TASK.get(b)), sources or "—",
                       f"{pct(sl.get('H'))} {pct_ci(sl.get('H_ci'))}", f"{pct(sl.get('random'))} {pct_ci(sl.get('random_ci'))}",
                       pct(lsq.get("H")), pct(lsq.get("random"))])
    per_bench = []
    for b, d in benches.items():
        table, warn = _alpha_table(d)
        per_bench.append({"name": b, "table": table, "warn": warn})
    return {"n_neurons": iv.get("n_neurons"), "figure": figures.intervention_curves(benches),
            "slopes": Table.of(["benchmark", "compliance means", "n", "judge", "judge agreement (95% CI)",
                                "verdicts by judge", "H", "random", "H (least squares)", "random (least squares)"],
                               slopes, [2, 6, 7, 8, 9]),
            "benchmarks": per_bench, "rate_warn": RATE_WARN, "qa_benchmarks": ", ".join(qa_benches)}


def origin(run: Run) -> dict[str, Any]:
    """Backward transfer of the probe to the base model, and parameter drift in instruction tuning."""
    og = run.need("origin", "origin.json")
    tr, dr = og.get("transfer") or {}, og.get("drift") or {}
    transfer = {"figure": figures.transfer_bars(tr), "table": Table.of(
        ["set", "n", "AUROC base", "95% CI", "accuracy base %", "AUROC instruct", "AUROC random"],
        [[s, count(t.get("n")), num(t.get("auroc")), ci(t.get("auroc_ci")), pct(t.get("accuracy")),
          num(t.get("instruct_auroc")), num(t.get("random_auroc"))] for s, t in tr.items()], range(1, 7))} if tr else None
    drift = {"figure": figures.drift_histogram(dr["hist"], dr.get("mean_rank_h")) if dr.get("hist") else None,
             "table": Table.of(["", "value"], [
                 ["neurons", count(dr.get("n_neurons"))], ["H-Neurons", count(dr.get("n_h"))],
                 ["mean normalised rank of H-Neurons", num(dr.get("mean_rank_h"))],
                 ["median normalised rank", num(dr.get("median_rank_h"))],
                 [f"Welch t (alternative: {dr.get('alternative', '—')})", num(dr.get("t_stat"), 2)],
                 ["t-test p", num(dr.get("t_p"), 4)], ["permutation p", num(dr.get("perm_p"), 4)]], [1])} if dr else None
    return {"transfer": transfer, "drift": drift}
