"""Data for the neuron explorer section (``templates/sections/explorer.html``).

The numbers come from :mod:`hneurons.report.explorer`; this module joins them with the labelled
responses and formats them. Parts that cannot be shown (no feature store, no labelled responses,
no stability resamples) become a reason printed on the page, never an empty column.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hneurons.errors import HNeuronsError
from hneurons.report.explorer import (
    MAX_NEURONS,
    TOP_ANSWERS,
    Activations,
    anchor,
    class_mean_ci,
    highlight,
    load_activations,
    top_answers,
)
from hneurons.report.fmt import DASH, ci, neuron, num
from hneurons.report.html import Cell, Table
from hneurons.report.run import NotRun, Run

__all__ = ["explorer", "neuron_link"]

CLASSES = ((0, "faithful"), (1, "hallucinated"))


def neuron_link(entry: dict[str, Any]) -> Cell:
    """A neuron's label as a link to its explorer card (the probe section's list uses it too)."""
    label = neuron(entry)
    return Cell(label, code=True, href=anchor(label))


def _responses(run: Run) -> tuple[dict[str, dict[str, Any]], str | None]:
    """``qid → {question, response, label, span_text}`` from responses/labelled.parquet, or a reason."""
    path = run.root / "responses" / "labelled.parquet"
    if run.stage_reason("responses") or not path.is_file():
        return {}, "responses/labelled.parquet is missing; run `hneurons responses` to produce it"
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        return {}, f"responses/labelled.parquet could not be read ({type(exc).__name__}); re-run the responses stage"
    cols = [c for c in ("qid", "question", "response", "label", "span_text") if c in table.column_names]
    if "qid" not in cols or "label" not in cols:
        return {}, "responses/labelled.parquet has no qid/label columns; re-run the responses stage"
    return {str(r["qid"]): r for r in table.select(cols).to_pylist()}, None


def _activations(run: Run, cols: list[int]) -> tuple[Activations | None, str | None]:
    if run.stage_reason("features"):
        return None, f"features not run: {run.stage_reason('features')}"
    try:
        return load_activations(run.root / "features", cols), None
    except HNeuronsError as exc:
        return None, str(exc)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"the feature store could not be read ({type(exc).__name__}); re-run `hneurons features --force`"


def _class_parts(k: int, acts: Activations, rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean CETT with CI and the top answers of each class, for neuron column ``k``."""
    labels = {q: int(r["label"]) for q, r in rows.items() if r.get("label") is not None}
    v = acts.values[:, k]
    scale = float(np.nanmax(np.abs(v))) if v.size else 0.0
    out = []
    for label, name in CLASSES:
        mine = np.array([x for q, x in zip(acts.qids, v) if labels.get(q) == label])
        mean, lo, hi, n = class_mean_ci(mine)
        answers = []
        for q, x in top_answers(v, acts.qids, labels, label, TOP_ANSWERS):
            r = rows[q]
            answers.append({"qid": q, "question": str(r.get("question") or ""), "value": num(x, 4),
                            "segments": [(t, s if s is None else round(s, 3)) for t, s in highlight(
                                str(r.get("response") or ""), str(r.get("span_text") or ""), x / scale if scale else 0.0)]})
        out.append({"name": name, "mean": num(mean, 4), "ci": ci([lo, hi], lambda z: num(z, 4)), "n": n,
                    "answers": answers})
    return out


def explorer(run: Run) -> dict[str, Any]:
    """One card per H-Neuron (weight order), and the index table that links to them."""
    h = run.need("probe", "h_neurons.json")
    neurons = [n for n in h.get("neurons") or [] if isinstance(n, dict)]
    if not neurons:
        raise NotRun("the probe selected no H-Neurons")
    shown = neurons[:MAX_NEURONS]
    stab, stab_reason = run.load("probe", "stability.json")
    freq = {(int(r["layer"]), int(r["neuron"])): r.get("freq") for r in (stab or {}).get("frequency", [])}
    d_ff = int(h.get("d_ff") or (run.manifest.get("model") or {})["d_ff"])
    acts, acts_reason = _activations(run, [int(n["layer"]) * d_ff + int(n["neuron"]) for n in shown])
    rows, rows_reason = _responses(run) if acts is not None else ({}, None)
    cards, index = [], []
    for k, n in enumerate(shown):
        link = neuron_link(n)
        f = freq.get((int(n["layer"]), int(n["neuron"])), 0.0 if stab else None)
        parts = _class_parts(k, acts, rows) if acts is not None and rows else []
        cards.append({"label": link.text, "id": link.href, "layer": int(n["layer"]), "index": int(n["neuron"]),
                      "expert": n.get("expert"), "weight": num(n.get("weight"), 4), "freq": num(f, 2),
                      "classes": parts})
        means = [Cell(p["mean"], p["ci"]) for p in parts] or [DASH, DASH]
        index.append([link, str(n["layer"]), str(n["neuron"]), num(n.get("weight"), 4), num(f, 2), *means])
    return {"n_total": len(neurons), "n_shown": len(shown), "cards": cards,
            "index": Table.of(["neuron", "layer", "index", "weight", "selection freq.", "mean CETT faithful [95% CI]",
                               "mean CETT hallucinated [95% CI]"], index, range(1, 7)),
            "n_resamples": (stab or {}).get("n_resamples"), "freq_reason": stab_reason,
            "cett_reason": acts_reason or rows_reason}
