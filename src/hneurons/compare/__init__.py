"""``hneurons compare``: several runs side by side, as JSON and one self-contained HTML page.

Why: the first question after one run is whether its H-Neurons are a property of the model or of
the seed, preset or sample, and then whether they look alike across models of different depth.
:func:`compare_runs` summarises each run directory (:mod:`hneurons.compare.summary`: model, neurons
selected, relative-depth histogram, C, stability, detection AUROC against random neurons on every
set, intervention slopes, judge agreement) and, for every pair of runs of the same model
(same model fingerprint), the Jaccard overlap of their H-Neuron sets. :func:`write_page` renders it
(:mod:`hneurons.compare.page`). Run directories are read as data only.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

from hneurons.compare.summary import DEPTH_BINS, judge_card, summarize_run
from hneurons.errors import ConfigError

__all__ = ["compare_runs", "overlaps", "write_page"]


def _unique_names(runs: list[dict[str, Any]]) -> None:
    """Column names: the folder name, numbered when two runs share it."""
    seen: dict[str, int] = {}
    for r in runs:
        n = seen[r["name"]] = seen.get(r["name"], 0) + 1
        if n > 1:
            r["name"] = f"{r['name']} ({n})"


def overlaps(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Jaccard overlap of the H-Neuron sets of every pair of runs with the same model fingerprint."""
    out = []
    for a, b in combinations(runs, 2):
        fp = a["model"].get("fingerprint")
        if not fp or fp != b["model"].get("fingerprint"):
            continue
        pa, pb = a["probe"], b["probe"]
        row: dict[str, Any] = {"a": a["name"], "b": b["name"], "model_fingerprint": fp,
                               "a_fingerprint": a["run_fingerprint"], "b_fingerprint": b["run_fingerprint"]}
        if pa["status"] != "done" or pb["status"] != "done":
            row.update(status="not run", reason="a run has no H-Neurons (probe not run)")
        else:
            sa = {tuple(n) for n in pa["neurons"]}
            sb = {tuple(n) for n in pb["neurons"]}
            shared = [lab for n, lab in zip(pa["neurons"], pa["labels"]) if tuple(n) in sb]
            union = len(sa | sb)
            row.update(status="done", n_a=len(sa), n_b=len(sb), n_shared=len(sa & sb), n_union=union,
                       jaccard=len(sa & sb) / union if union else None, shared=shared)
        out.append(row)
    return out


def compare_runs(paths: Sequence[str | Path]) -> dict[str, Any]:
    """The comparison of two or more run directories (a non-run path raises a one-line DataError)."""
    if len(paths) < 2:
        raise ConfigError(f"compare needs at least two run directories, got {len(paths)}")
    card = judge_card()
    runs = [summarize_run(Path(p), card) for p in paths]
    _unique_names(runs)
    sets: dict[str, list[str]] = {}
    for r in runs:
        for name in (r["detect"].get("sets") or {}) if r["detect"]["status"] == "done" else {}:
            sets.setdefault(name, []).append(r["name"])
    benches = sorted({b for r in runs if r["intervene"]["status"] == "done" for b in r["intervene"]["benchmarks"]})
    return {
        "runs": runs, "depth_bins": DEPTH_BINS,
        "sets": {name: {"runs": who, "shared": len(who) == len(runs)} for name, who in sets.items()},
        "benchmarks": benches, "overlaps": overlaps(runs),
    }


def write_page(comparison: dict[str, Any], out: str | Path) -> Path:
    """Render the page and write it atomically; returns its path."""
    from hneurons.compare.page import render_page
    from hneurons.rundir import atomic_path

    path = Path(out)
    with atomic_path(path) as tmp:
        tmp.write_text(render_page(comparison), encoding="utf-8")
    return path
