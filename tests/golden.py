"""The smoke preset's outputs as a golden fixture: what every refactor must leave unchanged.

``summarize(run_dir)`` reduces a finished run to the things a result depends on: the kept records
(question, label, split, response, answer span), the H-Neurons with their weights and C, every
detection number and every intervention count, plus a digest of the generated texts. ``compare``
lists the differences (floats within a tolerance, everything else exactly).

A fixture is stored per weight dtype (``tests/fixtures/golden/smoke_<dtype>.json``), because bf16
and float32 weights sample different text; a machine whose CPU lacks bf16 runs the float32 one.
Regenerate one only in a commit that says why the numbers changed::

    hneurons run --preset smoke --runs /tmp/g --name s [--set model.dtype=float32]
    python tests/golden.py /tmp/g/s > tests/fixtures/golden/smoke_bfloat16.json
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "golden"
FLOAT_TOL = 1e-6  # absolute, for metrics (AUROC, accuracy, compliance)
# Relative, for probe weights and C. The L1 solver stops at tol 1e-4, so float rounding in the
# features moves weights by more than that: two clean installs of the same commit (e648e6a) an hour
# apart on 2026-12-07, after a dependency release, gave one weight 0.495444 vs 0.495511 (1.3e-4) and
# C 8.33960 vs 8.33968, with the same neurons, records, detection and intervention numbers.
WEIGHT_RTOL = 1e-3


def _digest(texts: list[str]) -> str:
    return hashlib.sha256("\n\x00".join(texts).encode()).hexdigest()[:16]


def _records(root: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    cols = ["qid", "label", "split", "response", "span_start", "span_end"]
    rows = pq.read_table(root / "responses" / "labelled.parquet", columns=cols).to_pylist()
    return sorted(rows, key=lambda r: r["qid"])


def _probe(root: Path) -> dict[str, Any]:
    h = json.loads((root / "probe" / "h_neurons.json").read_text())
    return {"C": h["C"], "neurons": sorted([n["layer"], n["neuron"], n["weight"]] for n in h["neurons"])}


def _detect(root: Path) -> dict[str, Any]:
    d = json.loads((root / "detect" / "detect.json").read_text())
    out: dict[str, Any] = {}
    for name, s in d["sets"].items():
        out[name] = {"n": s["n"], "methods": {m: {k: v.get(k) for k in ("auroc", "accuracy")}
                                               for m, v in s["methods"].items()}}
    return out


def _intervene(root: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    iv = json.loads((root / "intervene" / "intervene.json").read_text())
    out: dict[str, Any] = {}
    for bench, b in iv["benchmarks"].items():
        out[bench] = {cond: {a: [v["k"], v["n"]] for a, v in b[cond].items()} for cond in ("H", "random")}
    rows = pq.read_table(root / "intervene" / "generations.parquet",
                         columns=["bench", "condition", "alpha", "item_id", "response"]).to_pylist()
    rows.sort(key=lambda r: (r["bench"], r["condition"], r["alpha"], r["item_id"]))
    out["generations"] = _digest([r["response"] for r in rows])
    return out


def summarize(run_dir: str | Path) -> dict[str, Any]:
    """The golden view of a finished smoke run."""
    root = Path(run_dir)
    manifest = json.loads((root / "manifest.json").read_text())
    return {"dtype": manifest["model"]["dtype"], "records": _records(root), "probe": _probe(root),
            "detect": _detect(root), "intervene": _intervene(root)}


def _close(a: Any, b: Any, path: str) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        if math.isnan(a) and math.isnan(b):
            return True
        rel = "weight" in path or path.endswith("/C") or "/neurons" in path
        return math.isclose(a, b, rel_tol=WEIGHT_RTOL) if rel else abs(a - b) <= FLOAT_TOL
    return a == b


def compare(got: Any, want: Any, path: str = "") -> list[str]:
    """Differences between two summaries, each as ``path: got != want``."""
    if isinstance(want, dict) and isinstance(got, dict):
        diffs = [f"{path}/{k}: missing" for k in want if k not in got]
        diffs += [f"{path}/{k}: unexpected" for k in got if k not in want]
        for k in want:
            if k in got:
                diffs += compare(got[k], want[k], f"{path}/{k}")
        return diffs
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{path}: {len(got)} entries != {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in compare(g, w, f"{path}[{i}]")]
    return [] if _close(got, want, path) else [f"{path}: {got!r} != {want!r}"]


def fixture_for(dtype: str) -> Path:
    return FIXTURES / f"smoke_{dtype}.json"


if __name__ == "__main__":
    json.dump(summarize(sys.argv[1]), sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")
