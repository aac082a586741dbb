"""Data parallelism (hneurons.core.distributed): sharding, gathering, per-rank logs, a dead rank.

The multi-rank tests start two real processes on gloo (CPU) with the environment torchrun sets.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hneurons.core import distributed
from hneurons.core.distributed import World, unshard

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(script: str, tmp_path: Path, world: int = 2, timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """Run ``script`` as ranks 0..world-1 (what torchrun does, without its agent)."""
    path = tmp_path / "worker.py"
    path.write_text(textwrap.dedent(script))
    port = _free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "PYTHONPATH": SRC, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "HNEURONS_DIST_BACKEND": "gloo",
               "HNEURONS_DIST_TIMEOUT_S": "60", "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(path), str(tmp_path)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_one_process_is_the_whole_world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(distributed, "_STATE", {})
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.world() == World(0, 1) and distributed.is_main()
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    assert distributed.gather_sharded(["a", "b"]) == ["a", "b"]
    log = tmp_path / "s.jsonl"
    assert distributed.shard_log(log) == log
    assert distributed.merge_shard_logs(log, [[{"x": 1}]]) == [[{"x": 1}]]
    assert not log.exists()  # in one process the loop already appended to the log itself


def test_unshard_inverts_strided_shards() -> None:
    items = list(range(11))
    for size in (1, 2, 3, 4):
        parts = [items[r::size] for r in range(size)]
        assert unshard(parts) == items


def test_bad_world_size_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "_STATE", {})
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(Exception, match="WORLD_SIZE='two' is not an integer"):
        distributed.world()


WORKER = """
    import json, sys
    from pathlib import Path
    from hneurons.core import distributed
    from hneurons.rundir import append_jsonl, read_jsonl

    root = Path(sys.argv[1])
    log = root / "stage" / "samples.jsonl"
    w = distributed.world()
    chunks = [[{"qid": f"q{c}-{i}", "chunk": c} for i in range(2)] for c in range(5)]
    mine = []
    for c in distributed.shard(range(5)):
        append_jsonl(distributed.shard_log(log), chunks[c])
        mine.append(chunks[c])
    merged = distributed.merge_shard_logs(log, mine)
    decided = distributed.broadcast({"from": w.rank})
    print(json.dumps({"rank": w.rank, "size": w.size, "merged": merged, "decided": decided,
                      "shards_left": sorted(p.name for p in (root / "stage" / ".shards").glob("*"))}))
"""


def test_two_ranks_merge_in_one_process_order(tmp_path: Path) -> None:
    procs = _launch(WORKER, tmp_path)
    for p in procs:
        assert p.returncode == 0, p.stderr[-2000:]
    outs = [json.loads(p.stdout.strip().splitlines()[-1]) for p in procs]
    expected = [[{"qid": f"q{c}-{i}", "chunk": c} for i in range(2)] for c in range(5)]
    for rank, out in enumerate(outs):
        assert out["rank"] == rank and out["size"] == 2
        assert out["merged"] == expected  # chunk order as one process samples them, on every rank
        assert out["decided"] == {"from": 0}
        assert out["shards_left"] == []
    lines = [json.loads(x) for x in (tmp_path / "stage" / "samples.jsonl").read_text().splitlines()]
    assert lines == [rec for chunk in expected for rec in chunk]  # rank 0 wrote each record once


def test_shard_logs_of_an_interrupted_run_are_folded_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "_STATE", {})
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    from hneurons.rundir import append_jsonl, read_jsonl

    log = tmp_path / "samples.jsonl"
    append_jsonl(log, [{"qid": "a"}])
    append_jsonl(tmp_path / ".shards" / "samples.rank1of3.jsonl", [{"qid": "b"}, {"qid": "a"}])
    distributed.fold_shard_logs(log)
    assert [r["qid"] for r in read_jsonl(log, key=lambda r: r["qid"])] == ["a", "b"]
    assert not list((tmp_path / ".shards").iterdir())


DYING = """
    import os, sys
    from hneurons.core import distributed
    w = distributed.world()
    distributed.barrier()
    if w.rank == 1:
        os._exit(3)  # killed mid-stage: no message, no clean shutdown
    try:
        distributed.all_gather("rank 0's shard")
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}")
        sys.exit(2)
"""


def test_a_dead_rank_is_named_by_the_others(tmp_path: Path) -> None:
    procs = _launch(DYING, tmp_path)
    assert procs[1].returncode == 3
    assert procs[0].returncode == 2, procs[0].stderr[-2000:]
    line = procs[0].stdout.strip().splitlines()[-1]
    assert line.startswith("StageError: rank 0 of 2: gathering results failed because rank 1 of 2 died"), line
    assert "resume" in line
