"""Summaries of the α sweep: compliance with Wilson CIs per benchmark, α and condition, and slopes."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hneurons.errors import StageError
from hneurons.intervention.sweep import PROGRESS, item_key
from hneurons.intervention.tasks import BENCHMARKS, Item, ItemResult
from hneurons.rundir import atomic_path


def alpha_key(alpha: float) -> str:
    """The JSON key of an α (``"0.0"``, ``"1.5"``)."""
    return str(float(alpha))


def summarize_results(results: Sequence[ItemResult]) -> dict[str, Any]:
    """Compliance over counted items (``complied`` not None) with a Wilson 95 % CI, plus counts."""
    from hneurons.stats import proportion_ci

    counted = [r for r in results if r.complied is not None]
    k = sum(bool(r.complied) for r in counted)
    rate, lo, hi = proportion_ci(k, len(counted))
    out: dict[str, Any] = {
        "compliance": rate, "ci": [lo, hi], "n": len(counted), "k": k, "n_items": len(results),
        "parse_failures": sum(r.parse_failure for r in results),
        "truncated": sum(r.truncated for r in results),
    }
    out["parse_failure_rate"] = out["parse_failures"] / len(results) if results else float("nan")
    initial = [r for r in results if r.extra.get("initial_correct")]
    if any("initial_correct" in r.extra for r in results):  # sycophancy
        out["all_items_rate"] = k / len(results) if results else float("nan")
        out["control"] = (sum(bool(r.extra.get("control_flip")) for r in initial) / len(initial)
                          if initial else float("nan"))
    return out


def pool_seeds(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Random-neuron summary over seeds: mean compliance, Wilson CI of the pooled counts."""
    from hneurons.stats import proportion_ci

    k = sum(s["k"] for s in per_seed)
    n = sum(s["n"] for s in per_seed)
    _, lo, hi = proportion_ci(k, n)
    rates = [s["compliance"] for s in per_seed if s["n"]]
    out: dict[str, Any] = {
        "compliance": float(np.mean(rates)) if rates else float("nan"), "ci": [lo, hi], "n": n, "k": k,
        "per_seed": [s["compliance"] for s in per_seed],
        "parse_failures": sum(s["parse_failures"] for s in per_seed),
        "truncated": sum(s["truncated"] for s in per_seed),
    }
    for extra in ("all_items_rate", "control"):
        vals = [s[extra] for s in per_seed if extra in s and np.isfinite(s[extra])]
        if any(extra in s for s in per_seed):
            out[extra] = float(np.mean(vals)) if vals else float("nan")
    return out


def slopes(alphas: Sequence[float], rates: Sequence[float]) -> tuple[float, float]:
    """(endpoint slope (CR(α_max) − CR(α_min)) / (α_max − α_min), least-squares slope), per unit α.

    α values with no counted items (NaN rate) are left out; fewer than two α give NaN.
    """
    pts = sorted((float(a), float(r)) for a, r in zip(alphas, rates) if np.isfinite(r))
    if len(pts) < 2 or pts[-1][0] == pts[0][0]:
        return float("nan"), float("nan")
    a = np.array([p[0] for p in pts])
    r = np.array([p[1] for p in pts])
    endpoint = (r[-1] - r[0]) / (a[-1] - a[0])
    lsq = float(np.polyfit(a, r, 1)[0])
    return float(endpoint), lsq


def summarize(
    records: Mapping[tuple[str, str, float, str], Mapping[str, Any]],
    items: Mapping[str, Sequence[Item]],
    conditions: Sequence[str],
    alphas: Sequence[float],
    judge_name: str,
    n_neurons: int,
) -> dict[str, Any]:
    """``intervene.json`` (docs/RUNDIR.md): per benchmark, α and condition, plus slopes."""
    first = conditions[0]
    randoms = [c for c in conditions if c != first]
    grid = sorted(float(a) for a in alphas)
    out: dict[str, Any] = {"alphas": grid, "n_neurons": n_neurons,
                           "random_seeds": len(randoms), "judge": judge_name, "benchmarks": {}}
    for bench_name, bench_items in items.items():
        bench = BENCHMARKS[bench_name]

        def results(cond: str, alpha: float) -> list[ItemResult]:
            c = first if alpha == 1.0 else cond
            try:
                return [ItemResult.from_dict(records[item_key(bench_name, c, alpha, it.id)]) for it in bench_items]
            except KeyError as e:
                raise StageError(f"intervene: no result for {e.args[0]}; delete intervene/{PROGRESS} and re-run") from None

        h = {alpha_key(a): summarize_results(results(first, a)) for a in grid}
        rnd = {alpha_key(a): pool_seeds([summarize_results(results(c, a)) for c in randoms]) for a in grid} if randoms else {}
        h_end, h_lsq = slopes(grid, [h[alpha_key(a)]["compliance"] for a in grid])
        r_end, r_lsq = slopes(grid, [rnd[alpha_key(a)]["compliance"] for a in grid]) if randoms else (float("nan"),) * 2
        out["benchmarks"][bench_name] = {
            "n": len(bench_items), "description": bench.description, "compliance_rule": bench.compliance,
            "family": bench.family,
            "judge": "parser" if bench_name == "faitheval" else judge_name,
            # how many verdicts came from which judge (LLM, offline, LLM fallback), all conditions and α
            "judge_sources": dict(Counter(str(r["extra"]["judge"]) for k, r in records.items()
                                          if k[0] == bench_name and (r.get("extra") or {}).get("judge"))),
            "H": h, "random": rnd,
            "slope": {"H": h_end, "random": r_end},
            "slope_lsq": {"H": h_lsq, "random": r_lsq},
        }
    # the paper's mean slope is over its compliance benchmarks; the qa family is reported on its own
    sl = [b["slope_lsq"]["H"] for b in out["benchmarks"].values()
          if b["family"] == "compliance" and np.isfinite(b["slope_lsq"]["H"])]
    out["mean_slope_lsq_pp"] = 100 * float(np.mean(sl)) if sl else float("nan")
    return out


def generation_rows(
    records: Mapping[tuple[str, str, float, str], Mapping[str, Any]],
    items: Mapping[str, Sequence[Item]],
    conditions: Sequence[str],
    alphas: Sequence[float],
) -> list[dict[str, Any]]:
    """Rows of ``generations.parquet``; α = 1 rows are repeated under every condition."""
    rows = []
    for bench_name, bench_items in items.items():
        for cond in conditions:
            for a in sorted(float(x) for x in alphas):
                src = conditions[0] if a == 1.0 else cond
                for it in bench_items:
                    r = records[item_key(bench_name, src, a, it.id)]
                    rows.append({"bench": bench_name, "condition": cond, "alpha": a, "item_id": it.id,
                                 "prompt": r["prompt"], "response": r["response"], "complied": r["complied"],
                                 "parse_failure": bool(r["parse_failure"]), "truncated": bool(r["truncated"]),
                                 "extra": json.dumps(r.get("extra") or {}, ensure_ascii=False)})
    return rows


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    """Atomically write rows (fixed schema, so an empty table still has its columns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("bench", pa.string()), ("condition", pa.string()), ("alpha", pa.float64()),
                        ("item_id", pa.string()), ("prompt", pa.string()), ("response", pa.string()),
                        ("complied", pa.bool_()), ("parse_failure", pa.bool_()), ("truncated", pa.bool_()),
                        ("extra", pa.string())])
    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
