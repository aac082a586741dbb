"""The comparison page: tables of cells and three figures, rendered through a Jinja2 template.

The template (``report/templates/compare.html``, which extends the report's page) autoescapes
everything, so run names, reasons and config values from a run directory can never become markup.
Figures are PNG data URIs drawn on :class:`matplotlib.figure.Figure` without pyplot, in the report's
colours (H-Neurons vermilion, random neurons grey), so the page needs nothing from the network and
its CSP forbids loads.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from hneurons.report.figures import BASELINE_COLORS, RANDOM_COLOR
from hneurons.report.html import render

Cell = dict[str, str]


def _png(fig: Figure) -> str:
    """A figure as a PNG data URI (no metadata: no URL can hide in the bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _color(i: int) -> str:
    return BASELINE_COLORS[i % len(BASELINE_COLORS)]


def _f(x: Any, nd: int = 3) -> str:
    """A number with ``nd`` decimals (never "-0.0"), or an em dash for null."""
    return f"{round(x, nd) + 0.0:.{nd}f}" if isinstance(x, (int, float)) and math.isfinite(x) else "—"


def _ci(ci: Any) -> str:
    return f" [{_f(ci[0], 2)}, {_f(ci[1], 2)}]" if isinstance(ci, list) and len(ci) == 2 else ""


def _cell(text: str, cls: str = "", title: str = "") -> Cell:
    return {"text": text, "cls": cls, "title": title}


def _notrun(part: dict[str, Any]) -> Cell:
    return _cell("not run", "notrun", part.get("reason", ""))


def depth_figure(runs: list[dict[str, Any]], bins: int) -> str | None:
    """Share of each run's H-Neurons per relative-depth bin (layer / n_layers)."""
    done = [(i, r) for i, r in enumerate(runs) if r["probe"]["status"] == "done" and sum(r["probe"]["depth_hist"])]
    if not done:
        return None
    fig = Figure(figsize=(6.4, 2.8), layout="constrained")
    ax = fig.add_subplot()
    edges = np.linspace(0, 1, bins + 1)
    for i, r in done:
        h = np.asarray(r["probe"]["depth_hist"], dtype=float)
        ax.stairs(h / h.sum(), edges, color=_color(i), lw=2, label=f"{r['name']} (n = {int(h.sum())})")
    ax.set_xlabel("relative depth of the layer ((layer + 0.5) / n_layers)")
    ax.set_ylabel("share of H-Neurons")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _png(fig)


def _grouped(groups: list[str], runs: list[dict[str, Any]], value: Any, ylabel: str, ref: float | None) -> str | None:
    """Bars per group and run: H-Neurons in the run's colour, the random control hatched grey beside it."""
    if not groups:
        return None
    fig = Figure(figsize=(max(5.5, 1.6 * len(groups) * max(1, len(runs)) / 2 + 2), 3.0), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / (2 * len(runs))
    for i, r in enumerate(runs):
        for k, (cond, style) in enumerate((("H", {"color": _color(i)}),
                                           ("random", {"color": "white", "edgecolor": RANDOM_COLOR, "hatch": "///"}))):
            vals, errs = zip(*(value(r, g, cond) for g in groups))
            xs = np.arange(len(groups)) + (2 * i + k - len(runs) + 0.5) * width
            yerr = None
            if any(errs):
                yerr = [[max(0.0, v - e[0]) if e else 0.0 for v, e in zip(vals, errs)],
                        [max(0.0, e[1] - v) if e else 0.0 for v, e in zip(vals, errs)]]
            ax.bar(xs, vals, width, yerr=yerr, capsize=2, error_kw={"elinewidth": 0.8}, **style,
                   label=f"{r['name']}: {'H-Neurons' if cond == 'H' else 'random neurons'}")
    if ref is not None:
        ax.axhline(ref, color="black", lw=0.6, ls=":")
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _png(fig)


def detect_figure(cmp: dict[str, Any]) -> str | None:
    """AUROC per evaluation set and run, H-Neurons vs random neurons, with 95 % CIs."""
    def value(r: dict[str, Any], s: str, cond: str) -> tuple[float, list[float] | None]:
        d = (r["detect"].get("sets") or {}).get(s) or {}
        v, ci = d.get(f"{'h' if cond == 'H' else 'random'}_auroc"), d.get("h_ci" if cond == "H" else "random_ci")
        ok = isinstance(ci, list) and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci)
        return (v if isinstance(v, (int, float)) else math.nan), (ci if ok and isinstance(v, (int, float)) else None)

    return _grouped(list(cmp["sets"]), cmp["runs"], value, "AUROC", 0.5)


def slopes_figure(cmp: dict[str, Any]) -> str | None:
    """Least-squares compliance slope (pp per unit α) per benchmark and run, H-Neurons vs random."""
    def value(r: dict[str, Any], b: str, cond: str) -> tuple[float, None]:
        d = (r["intervene"].get("benchmarks") or {}).get(b) or {}
        v = (d.get("slope_lsq_pp") or {}).get(cond)
        return (v if isinstance(v, (int, float)) else math.nan), None

    return _grouped(cmp["benchmarks"], cmp["runs"], value, "compliance slope (pp per unit α)", 0.0)


def overview_rows(runs: list[dict[str, Any]]) -> list[tuple[str, list[Cell]]]:
    """Model, preset, seed, fingerprints and stage status per run."""
    def stage(r: dict[str, Any]) -> Cell:
        bad = {s: v for s, v in r["stages"].items() if v != "done"}
        text = "all done" if not bad else "not run: " + ", ".join(bad)
        return _cell(text, "notrun" if bad else "", "; ".join(f"{s}: {v}" for s, v in bad.items()))

    def m(r: dict[str, Any], key: str) -> Cell:
        return _cell(str(r["model"].get(key) if r["model"].get(key) is not None else "—"))

    return [
        ("model", [m(r, "name") for r in runs]),
        ("architecture", [_cell(f"{r['model'].get('model_type')}, {r['model'].get('n_layers')} layers × "
                                f"{r['model'].get('d_ff')}") for r in runs]),
        ("neurons (total)", [_cell(f"{r['model']['n_neurons']:,}" if isinstance(r["model"].get("n_neurons"), int) else "—")
                             for r in runs]),
        ("weights dtype", [m(r, "dtype") for r in runs]),
        ("prompt format", [_cell(str(r.get("prompt_format") or "—")) for r in runs]),
        ("preset", [_cell(r["preset"]) for r in runs]),
        ("seed", [_cell(str(r.get("seed"))) for r in runs]),
        ("run fingerprint", [_cell(r["run_fingerprint"], "mono", "config + model fingerprint") for r in runs]),
        ("model fingerprint", [_cell(str(r["model"].get("fingerprint")), "mono") for r in runs]),
        ("git commit", [_cell(str(r.get("git_commit") or "—")[:12], "mono") for r in runs]),
        ("stages", [stage(r) for r in runs]),
    ]


def neuron_rows(runs: list[dict[str, Any]]) -> list[tuple[str, list[Cell]]]:
    """Selected neurons, ‰, C, stability, strongest neurons."""
    def p(r: dict[str, Any], fmt: Any) -> Cell:
        return fmt(r["probe"]) if r["probe"]["status"] == "done" else _notrun(r["probe"])

    def stab(r: dict[str, Any]) -> Cell:
        s = r["stability"]
        if s["status"] != "done":
            return _notrun(s)
        return _cell(f"{_f(s['jaccard_mean'], 2)} ± {_f(s['jaccard_std'], 2)} ({s['n_resamples']} resamples)")

    return [
        ("H-Neurons selected", [p(r, lambda q: _cell(f"{q['n_selected']:,} of {q['n_total']:,}")) for r in runs]),
        ("selected (‰)", [p(r, lambda q: _cell(_f(q["per_mille"], 3))) for r in runs]),
        ("C chosen", [p(r, lambda q: _cell(f"{q['C']:.4g}" if q["C"] is not None else "—", "", q.get("rule") or ""))
                      for r in runs]),
        ("stability (Jaccard across resamples)", [stab(r) for r in runs]),
        ("strongest neurons", [p(r, lambda q: _cell(", ".join(q["labels"][:8]) + (" …" if len(q["labels"]) > 8 else ""),
                                                    "mono")) for r in runs]),
        ("h_neurons.json sha256", [p(r, lambda q: _cell(str(q.get("sha256") or "—")[:16], "mono")) for r in runs]),
    ]


def detect_rows(cmp: dict[str, Any]) -> list[tuple[str, list[Cell]]]:
    """One row per evaluation set: H-Neuron AUROC [CI] vs random-neuron AUROC [CI] in each run."""
    rows = []
    for name, info in cmp["sets"].items():
        cells = []
        for r in cmp["runs"]:
            d = r["detect"]
            if d["status"] != "done":
                cells.append(_notrun(d))
                continue
            s = d["sets"].get(name)
            if s is None:
                cells.append(_cell("not evaluated", "notrun", d["skipped"].get(name, "set not configured")))
                continue
            cells.append(_cell(f"H {_f(s['h_auroc'])}{_ci(s['h_ci'])} · random {_f(s['random_auroc'])}"
                               f"{_ci(s['random_ci'])} (n = {s['n']})"))
        rows.append((name + ("" if info["shared"] else " (not in every run)"), cells))
    return rows


def intervene_rows(cmp: dict[str, Any]) -> list[tuple[str, list[Cell]]]:
    """One row per benchmark: least-squares slope (endpoint slope) in pp per α, H vs random."""
    def sl(d: dict[str, Any], cond: str) -> str:
        a, b = d["slope_lsq_pp"].get(cond), d["slope_pp"].get(cond)
        return f"{_f(a, 1)} ({_f(b, 1)})" if a is not None else "—"

    rows = []
    for b in cmp["benchmarks"]:
        cells = []
        for r in cmp["runs"]:
            iv = r["intervene"]
            d = (iv.get("benchmarks") or {}).get(b) if iv["status"] == "done" else None
            cells.append(_notrun(iv) if iv["status"] != "done" else _cell("not in this run", "notrun") if d is None
                         else _cell(f"H {sl(d, 'H')} · random {sl(d, 'random')} (n = {d['n']})"))
        rows.append((b, cells))
    return rows


def judge_rows(runs: list[dict[str, Any]]) -> list[tuple[str, list[Cell]]]:
    """One row per judged verdict kind: the judge and its agreement with GPT-4o, per run."""
    uses = list(dict.fromkeys(j["use"] for r in runs for j in r["judges"]))
    rows = []
    for use in uses:
        cells = []
        for r in runs:
            j = next((x for x in r["judges"] if x["use"] == use), None)
            if j is None:
                cells.append(_cell("not run", "notrun", "no finished stage gave these verdicts"))
            elif j["agreement"] is None:
                cells.append(_cell(f"{j['judge'] or '—'}: {j['note'] or 'no agreement measured'}"))
            else:
                cells.append(_cell(f"{j['judge']}: {100 * j['agreement']:.1f} %{_ci([100 * c for c in j['ci95']]) if j['ci95'] else ''}"
                                   f" of {j['n']:,}", "", str(j.get("note") or "")))
        rows.append((use, cells))
    return rows


def render_page(cmp: dict[str, Any]) -> str:
    """The whole HTML page (autoescaped)."""
    runs = cmp["runs"]
    names = [r["name"] for r in runs]
    figs = {"depth": depth_figure(runs, cmp["depth_bins"]), "detect": detect_figure(cmp), "slopes": slopes_figure(cmp)}
    return render(
        "compare.html", title=f"hneurons compare: {' vs '.join(names)}", names=names, paths=[r["path"] for r in runs],
        figs=figs, overview=overview_rows(runs), neurons=neuron_rows(runs), detect=detect_rows(cmp),
        intervene=intervene_rows(cmp), judges=judge_rows(runs), overlaps=cmp["overlaps"],
    )
