"""Tier 3: the smoke preset under `torchrun --nproc-per-node 2` (gloo, CPU) equals one process.

Every stage shards its chunks of items by rank and rank 0 merges and writes, so the run directory
must hold what a single process writes: the golden fixture (tests/golden.py, written by one
process) must match — the same records, the same H-Neurons and weights, the same detection and
intervention numbers. Each rank runs with the thread count a plain process uses, because CPU
kernels round differently with another number of threads (torchrun's default is 1), and the
sampled text follows the rounding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import golden  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def _threads() -> str:
    import torch

    return str(torch.get_num_threads())


@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    runs = tmp_path_factory.mktemp("runs")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "hneurons.cli.main", "run", "--preset", "smoke", "--runs", str(runs), "--name", "tr"]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": _threads(),
                               "HNEURONS_DIST_BACKEND": "gloo"})
    return {"root": runs / "tr", "proc": proc, "seconds": time.time() - t0}


def test_two_ranks_write_what_one_process_writes(torchrun_run: dict) -> None:
    proc = torchrun_run["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    root = torchrun_run["root"]
    got = golden.summarize(root)
    want = json.loads(golden.fixture_for(got["dtype"]).read_text())
    assert golden.compare(got, want) == []
    print(f"torchrun 2 × gloo smoke run: {torchrun_run['seconds']:.0f} s")


def test_rank_zero_alone_wrote_and_cleaned_up(torchrun_run: dict) -> None:
    root = torchrun_run["root"]
    manifest = json.loads((root / "manifest.json").read_text())
    for stage in ("responses", "features", "probe", "detect", "intervene", "report"):
        assert manifest["stages"][stage]["status"] == "done", stage
    assert not [p for p in root.rglob("*.rank*of*") if p.is_file()]  # every shard log merged and removed
    lines = (root / "responses" / "samples.jsonl").read_text().splitlines()
    keys = [(r["qid"], r["phase"], r["sample"]) for r in map(json.loads, lines)]
    assert len(keys) == len(set(keys))  # each sample written once, by rank 0
