"""The report's figures: matplotlib (Agg, no pyplot) rendered to inline PNG data URIs.

Figures are built on :class:`matplotlib.figure.Figure` directly rather than through ``pyplot`` so
that rendering never touches a global backend or a display, works inside servers and tests, and
leaves no open figures behind. Every function takes the plain dicts a stage wrote (docs/RUNDIR.md)
and returns a ``data:image/png;base64,…`` string, so the HTML file needs nothing from the network.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from hneurons.report.fmt import neuron

__all__ = [
    "C_path",
    "correct_count_histogram",
    "detection_bars",
    "drift_histogram",
    "intervention_curves",
    "layer_distribution",
    "qa_curves",
    "risk_coverage",
    "selection_frequency",
    "transfer_bars",
]

# Colour-blind-safe palette (Okabe–Ito); H-Neurons are always vermilion, the random control grey.
H_COLOR = "#D55E00"
RANDOM_COLOR = "#777777"
BASELINE_COLORS = ["#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
DPI = 110


def _png(fig: Figure) -> str:
    """Encode a figure as a PNG data URI."""
    buf = io.BytesIO()
    # No metadata: the bytes then depend only on the data (and no URL hides inside the PNG).
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fig(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    fig.set_layout_engine("constrained")
    return fig


def _num(x: Any) -> float:
    """A JSON number or null as a float (null → nan, so it is simply not drawn)."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def _method_color(method: str, order: Sequence[str]) -> str:
    """H-Neurons red, variants light red, random grey, every baseline its own palette colour."""
    if method == "h_neurons":
        return H_COLOR
    if method.startswith("h_neurons"):
        return "#F5A66B"
    if method == "random":
        return RANDOM_COLOR
    others = [m for m in order if not m.startswith("h_neurons") and m != "random"]
    idx = others.index(method) if method in others else len(others)
    return BASELINE_COLORS[idx % len(BASELINE_COLORS)]


def correct_count_histogram(hist: Sequence[int], k: int) -> str:
    """Bar chart of how many of the K samples were correct per question (ends = consistent)."""
    fig = _fig(5.2, 2.8)
    ax = fig.add_subplot()
    xs = np.arange(len(hist))
    colors = [H_COLOR if i == 0 else "#0072B2" if i == len(hist) - 1 else "#BBBBBB" for i in xs]
    bars = ax.bar(xs, hist, color=colors)
    ax.bar_label(bars, fontsize=8)
    ax.set_xticks(xs)
    ax.set_xlabel(f"correct samples out of K = {k}")
    ax.set_ylabel("questions")
    ax.set_title("Correct count per question (red: kept as hallucinated, blue: kept as faithful)", fontsize=9)
    return _png(fig)


def C_path(points: Sequence[Mapping[str, Any]], selected_C: float | None) -> str:  # noqa: N802 - C is the paper's symbol
    """Number of positive-weight neurons and held-out accuracy along the regularisation path."""
    pts = sorted(points, key=lambda p: _num(p.get("C")))
    Cs = np.array([_num(p.get("C")) for p in pts])
    fig = _fig(6.2, 3.0)
    ax = fig.add_subplot()
    ax.plot(Cs, [_num(p.get("n_positive")) for p in pts], "o-", color=H_COLOR, label="H-Neurons (positive weight)")
    ax.plot(Cs, [_num(p.get("n_nonzero")) for p in pts], "s--", color="#E69F00", ms=4, label="non-zero weights")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("C (inverse L1 strength)")
    ax.set_ylabel("neurons")
    ax2 = ax.twinx()
    ax2.plot(Cs, [_num(p.get("heldout_acc")) for p in pts], "^-", color="#0072B2", label="held-out accuracy")
    if any(not math.isnan(_num(p.get("heldout_auroc"))) for p in pts):
        ax2.plot(Cs, [_num(p.get("heldout_auroc")) for p in pts], "v:", color="#56B4E9", label="held-out AUROC")
    ax2.set_ylabel("held-out accuracy / AUROC")
    if selected_C is not None:
        ax.axvline(float(selected_C), color="black", lw=1.2, ls="--")
        ax.annotate(f"chosen C = {float(selected_C):g}", (float(selected_C), 1), xycoords=("data", "axes fraction"),
                    xytext=(4, -12), textcoords="offset points", fontsize=8)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    fig.legend(handles, labels, fontsize=7, loc="outside right upper", frameon=False)
    return _png(fig)


def layer_distribution(by_layer: Mapping[str, int]) -> str:
    """Bar chart of H-Neurons per layer (every layer shown, zeros included)."""
    items = sorted(((int(k), int(v)) for k, v in by_layer.items()), key=lambda kv: kv[0])
    fig = _fig(6.2, 2.6)
    ax = fig.add_subplot()
    ax.bar([k for k, _ in items], [v for _, v in items], color=H_COLOR)
    ax.set_xlabel("layer")
    ax.set_ylabel("H-Neurons")
    ax.set_xlim(-0.7, max((k for k, _ in items), default=0) + 0.7)
    ax.yaxis.get_major_locator().set_params(integer=True)
    return _png(fig)


def selection_frequency(frequency: Sequence[Mapping[str, Any]], h_set: set[tuple[int, int]], top: int = 40) -> str:
    """How often each neuron was selected across resamples (H-Neurons of the final probe in red)."""
    rows = sorted(frequency, key=lambda r: -_num(r.get("freq")))[:top]
    fig = _fig(6.2, 2.6)
    ax = fig.add_subplot()
    xs = np.arange(len(rows))
    colors = [H_COLOR if (int(r["layer"]), int(r["neuron"])) in h_set else "#BBBBBB" for r in rows]
    ax.bar(xs, [_num(r.get("freq")) for r in rows], color=colors)
    ax.set_xticks(xs)
    ax.set_xticklabels([neuron(r) for r in rows], rotation=90, fontsize=6)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("selection frequency")
    ax.set_title("Neurons selected in bootstrap resamples (red: in the final H-Neuron set)", fontsize=9)
    return _png(fig)


def detection_bars(sets: Mapping[str, Mapping[str, Any]], methods: Sequence[str], metric: str = "auroc") -> str:
    """Grouped bars, one group per evaluation set and one bar per method, with CI error bars.

    The analogue of the paper's main detection figure; ``metric`` is ``"auroc"`` or ``"accuracy"``.
    """
    names = list(sets)
    fig = _fig(max(6.0, 1.9 * len(names) + 2.2), 3.2)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(methods))
    floor: list[float] = []
    for i, m in enumerate(methods):
        vals, lo, hi = [], [], []
        for s in names:
            e = sets[s].get("methods", {}).get(m, {})
            v = _num(e.get(metric))
            ci = e.get(f"{metric}_ci") or [None, None]
            vals.append(v)
            lo.append(v - _num(ci[0]) if not math.isnan(_num(ci[0])) else 0.0)
            hi.append(_num(ci[1]) - v if not math.isnan(_num(ci[1])) else 0.0)
        xs = np.arange(len(names)) + (i - (len(methods) - 1) / 2) * width
        ax.bar(xs, vals, width, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], capsize=2, label=m,
               color=_method_color(m, methods), error_kw={"elinewidth": 0.8})
        floor.extend(np.subtract(vals, lo))
    ax.axhline(0.5, color="black", lw=0.6, ls=":")
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylim(auroc_axis_floor(floor), 1.0)
    ax.set_ylabel("AUROC" if metric == "auroc" else "accuracy")
    ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _png(fig)


def auroc_axis_floor(values: Sequence[float]) -> float:
    """The AUROC axis starts at 0.3, or lower (in steps of 0.1) when a bar or interval reaches below:
    a value under the axis would draw no bar at all, and an AUROC under 0.5 is a finding to show."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    low = min(finite, default=0.3)
    return 0.3 if low >= 0.3 else max(0.0, math.floor(low * 10) / 10)


def risk_coverage(methods: Mapping[str, Mapping[str, Any]], order: Sequence[str]) -> str:
    """Accuracy of the answers kept vs the fraction kept, abstaining on the most hallucination-like first."""
    fig = _fig(5.6, 3.2)
    ax = fig.add_subplot()
    for m in order:
        e = methods.get(m)
        if not e:
            continue
        aurc = _num(e.get("aurc"))
        label = f"{m} (AURC {aurc:.3f})" if not math.isnan(aurc) else m
        ax.plot([_num(c) for c in e.get("coverage", [])], [_num(a) for a in e.get("accuracy", [])], "-",
                color=_method_color(m, order), lw=2.0 if m == "h_neurons" else 1.2, label=label)
    ax.set_xlabel("coverage (fraction of answers kept)")
    ax.set_ylabel("accuracy of kept answers")
    ax.set_xlim(0, 1.02)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _png(fig)


def _curve(cond: Mapping[str, Mapping[str, Any]], key: str = "compliance",
           ci_key: str = "ci") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """α, rate (%), CI low and high (%) of one condition's ``{alpha: {key, ci_key}}`` record."""
    keys = sorted(cond, key=float)
    a = np.array([float(k) for k in keys])
    c = np.array([_num(cond[k].get(key)) for k in keys])
    lo = np.array([_num((cond[k].get(ci_key) or [None, None])[0]) for k in keys])
    hi = np.array([_num((cond[k].get(ci_key) or [None, None])[1]) for k in keys])
    return a, c * 100, lo * 100, hi * 100


def intervention_curves(benchmarks: Mapping[str, Mapping[str, Any]]) -> str:
    """Compliance (%) vs α per benchmark: H-Neurons vs the random-neuron control, 95% CI bands.
    Benchmarks of the ``qa`` family (their rate is hallucination, not compliance) are left out."""
    names = [b for b in benchmarks if (benchmarks[b] or {}).get("family") != "qa"]
    cols = min(4, max(1, len(names)))
    rows = math.ceil(len(names) / cols)
    fig = _fig(3.0 * cols + 0.4, 2.7 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, names):
        b = benchmarks[name]
        for cond, color, label in (("random", RANDOM_COLOR, "random neurons"), ("H", H_COLOR, "H-Neurons")):
            if not b.get(cond):
                continue
            a, c, lo, hi = _curve(b[cond])
            ax.plot(a, c, "o-", color=color, ms=3, label=label)
            ok = ~(np.isnan(lo) | np.isnan(hi))
            if ok.any():
                ax.fill_between(a[ok], lo[ok], hi[ok], color=color, alpha=0.18, lw=0)
        ax.axvline(1.0, color="black", lw=0.6, ls=":")
        ax.set_title(f"{name} (n = {b.get('n', '?')})", fontsize=9)
        ax.set_xlabel("α (scale of the neurons)")
        ax.set_ylabel("compliance (%)")
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="best")
    return _png(fig)


# The qa family's outcomes (intervene/qa.json) and their colours; H-Neurons solid, random control dashed.
QA_COLORS = {"correct": "#0072B2", "wrong": "#CC79A7", "refusal": "#009E73", "fabricated": "#E69F00",
             "no_answer": "#999999", "hallucinated": "#D55E00", "abstained": "#56B4E9"}


def _qa_curve(curve: Mapping[str, Any], outcome: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """α, rate (%), CI low and high (%) of one outcome in ``{alpha: {"rates": {outcome: {rate, ci}}}}``."""
    recs = {k: ((v.get("rates") or {}).get(outcome) or {}) if isinstance(v, Mapping) else {} for k, v in curve.items()}
    return _curve(recs, "rate", "ci")


def qa_curves(rates: Mapping[str, Mapping[str, Any]], shown: Mapping[str, Sequence[str]]) -> str:
    """Per held-out QA set (``rates`` of qa.json), each shown outcome's rate (%) vs α: H-Neurons solid
    with 95% CI bands, random neurons dashed."""
    names = list(shown)
    cols = min(4, max(1, len(names)))
    rows = math.ceil(len(names) / cols)
    fig = _fig(3.0 * cols + 0.4, 2.7 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, names):
        s = rates.get(name) or {}
        n = next((v.get("n") for k, v in (s.get("H") or {}).items() if float(k) == 1.0 and isinstance(v, Mapping)), "?")
        for outcome in shown[name]:
            color = QA_COLORS.get(outcome, "#444444")
            for cond, style in (("H", "o-"), ("random", "s--")):
                curve = s.get(cond) or {}
                if not curve:
                    continue
                a, c, lo, hi = _qa_curve(curve, outcome)
                if np.isnan(c).all():
                    continue
                ax.plot(a, c, style, color=color, ms=3, lw=1.4 if cond == "H" else 0.9,
                        label=f"{outcome} ({'H-Neurons' if cond == 'H' else 'random'})")
                ok = ~(np.isnan(lo) | np.isnan(hi))
                if cond == "H" and ok.any():
                    ax.fill_between(a[ok], lo[ok], hi[ok], color=color, alpha=0.15, lw=0)
        ax.axvline(1.0, color="black", lw=0.6, ls=":")
        ax.set_title(f"{name} (n = {n})", fontsize=9)
        ax.set_xlabel("α (scale of the neurons)")
        ax.set_ylabel("rate (%)")
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    if axes.flat[0].get_legend_handles_labels()[0]:
        axes.flat[0].legend(fontsize=6, loc="best")
    return _png(fig)


def transfer_bars(transfer: Mapping[str, Mapping[str, Any]]) -> str:
    """AUROC of the instruct model's probe applied to the base model, per set, with the references."""
    names = list(transfer)
    fig = _fig(max(4.5, 1.5 * len(names) + 1.8), 3.0)
    ax = fig.add_subplot()
    xs = np.arange(len(names))
    v = np.array([_num(transfer[s].get("auroc")) for s in names])
    ci = [transfer[s].get("auroc_ci") or [None, None] for s in names]
    lo = np.array([_num(c[0]) for c in ci])
    hi = np.array([_num(c[1]) for c in ci])
    yerr = [np.nan_to_num(np.maximum(v - lo, 0)), np.nan_to_num(np.maximum(hi - v, 0))]
    ax.bar(xs - 0.2, v, 0.4, yerr=yerr, capsize=3, color=H_COLOR, label="base model, instruct probe")
    inst = np.array([_num(transfer[s].get("instruct_auroc")) for s in names])
    ax.bar(xs + 0.2, inst, 0.4, color="#0072B2", alpha=0.7, label="instruct model (reference)")
    rnd = np.array([_num(transfer[s].get("random_auroc")) for s in names])
    ax.scatter(xs - 0.2, rnd, marker="_", s=300, color="black", zorder=3, label="random neurons on base")
    ax.axhline(0.5, color="black", lw=0.6, ls=":")
    ax.set_xticks(xs)
    ax.set_xticklabels(names)
    ax.set_ylim(auroc_axis_floor([*(v - yerr[0]), *inst, *rnd]), 1.0)
    ax.set_ylabel("AUROC")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _png(fig)


def drift_histogram(hist: Mapping[str, Any], mean_rank_h: float | None) -> str:
    """Share of all neurons vs of H-Neurons per normalised drift rank (0 = changed most in tuning)."""
    counts_all = np.asarray(hist.get("counts_all", []), dtype=float)
    counts_h = np.asarray(hist.get("counts_h", []), dtype=float)
    bins = np.asarray(hist.get("bins", []), dtype=float)
    if bins.size == counts_all.size + 1:  # bin edges
        centers, width = (bins[:-1] + bins[1:]) / 2, np.diff(bins)
    else:  # bin centres
        centers = bins if bins.size == counts_all.size else np.linspace(0, 1, counts_all.size)
        width = np.full(counts_all.size, 1.0 / max(1, counts_all.size))
    fig = _fig(5.6, 2.9)
    ax = fig.add_subplot()
    share_all = counts_all / counts_all.sum() if counts_all.sum() else counts_all
    share_h = counts_h / counts_h.sum() if counts_h.sum() else counts_h
    ax.bar(centers, share_all, width * 0.95, color="#BBBBBB", label="all neurons")
    ax.bar(centers, share_h, width * 0.5, color=H_COLOR, alpha=0.85, label=f"H-Neurons (n = {int(counts_h.sum())})")
    ax.axvline(0.5, color="black", lw=0.6, ls=":")
    if mean_rank_h is not None and not math.isnan(_num(mean_rank_h)):
        ax.axvline(float(mean_rank_h), color=H_COLOR, lw=1.4, ls="--", label=f"H mean rank {float(mean_rank_h):.3f}")
    ax.set_xlabel("normalised drift rank (0 = most changed, 1 = least changed)")
    ax.set_ylabel("share of neurons")
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig)
