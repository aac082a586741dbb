"""Data parallelism over ``torch.distributed``: which rank am I, my share of the work, rank 0 merges.

A run started under ``torchrun`` (or ``accelerate launch``, or anything else that sets ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``) runs every stage in every process (SPMD).
Each loop over items walks only :func:`shard` of its *chunks* — whole chunks, because a chunk's
seed and row positions decide its samples (:func:`hneurons.core.generation.row_seed`), so a
chunk sampled by rank 1 of 2 is the chunk one process would have sampled, bit for bit. The
results come back in the one-process order through :func:`gather_sharded`, and only rank 0
(:func:`is_main`) writes the stage's files; each rank logs its finished chunks in its own shard
log (:func:`shard_log`) first, so an interrupted run resumes from every shard that finished.

The process group is gloo on CPU and NCCL when CUDA is there (``HNEURONS_DIST_BACKEND``
overrides). A rank that dies makes the others' next collective fail; they then stop with a
:class:`~hneurons.errors.StageError` naming the rank(s) that did not arrive, read off a counter
each rank bumps in the launcher's key-value store before every collective.
"""

from __future__ import annotations

import atexit
import datetime
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hneurons.errors import ConfigError, StageError

T = TypeVar("T")

_STATE: dict[str, Any] = {}  # the process group's World and store once joined (one per process)


@dataclass(frozen=True)
class World:
    """This process's rank and the number of processes (1 when not launched by torchrun)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer; unset it or fix the launcher") from None


def backend_name() -> str:
    """``HNEURONS_DIST_BACKEND`` if set, else NCCL when a CUDA device is visible, else gloo."""
    chosen = os.environ.get("HNEURONS_DIST_BACKEND")
    if chosen:
        if chosen not in ("gloo", "nccl"):
            raise ConfigError(f"HNEURONS_DIST_BACKEND={chosen!r}; choose one of gloo, nccl")
        return chosen
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def world() -> World:
    """The current World, joining the process group on first use when ``WORLD_SIZE`` > 1."""
    if "world" in _STATE:
        return _STATE["world"]
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        _STATE["world"] = World()
        return _STATE["world"]
    import torch
    import torch.distributed as dist

    rank = _env_int("RANK", 0)
    backend = backend_name()
    if backend == "nccl":  # one GPU per process on each node
        torch.cuda.set_device(_env_int("LOCAL_RANK", 0))
    timeout = datetime.timedelta(seconds=_env_int("HNEURONS_DIST_TIMEOUT_S", 3600))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=size, timeout=timeout)
        atexit.register(_leave)
    _STATE["world"] = World(rank, size)
    _STATE["store"] = _launcher_store(timeout)
    return _STATE["world"]


def _launcher_store(timeout: datetime.timedelta) -> Any:
    """A client of the store at ``MASTER_ADDR:MASTER_PORT`` (torchrun's agent keeps it), or None."""
    import torch.distributed as dist

    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not (addr and port):
        return None
    try:
        return dist.TCPStore(addr, int(port), is_master=False, timeout=timeout)
    except (RuntimeError, ValueError):  # naming a dead rank is a courtesy; never block the run on it
        return None


def _leave() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    """Whether this process writes the run directory (rank 0, or the only process)."""
    return world().is_main


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share: every ``size``-th item from ``rank`` on (all of them in one process)."""
    w = world()
    return list(items[w.rank::w.size])


def unshard(parts: Sequence[Sequence[T]]) -> list[T]:
    """Undo :func:`shard`: interleave every rank's share back into the one-process order."""
    total = sum(len(p) for p in parts)
    size = len(parts)
    return [parts[i % size][i // size] for i in range(total)]


def _collective(what: str, call: Callable[[], T]) -> T:
    """Run a collective; when it fails because a rank is gone, one line naming that rank."""
    w = world()
    store = _STATE.get("store")
    seq = _STATE.get("seq", 0) + 1
    _STATE["seq"] = seq
    if store is not None:
        store.set(f"hneurons/seq/{w.rank}", str(seq))
    try:
        return call()
    except Exception as exc:  # gloo / NCCL raise RuntimeError or DistBackendError
        raise StageError(f"rank {w.rank} of {w.size}: {what} failed because {_missing_ranks(seq)} "
                         f"({type(exc).__name__}); rerun the same command to resume from the shards that "
                         "finished") from None


def _missing_ranks(seq: int) -> str:
    """The ranks that never reached collective number ``seq`` (read from the launcher's store)."""
    store, w = _STATE.get("store"), world()
    if store is None:
        return "another rank stopped"
    late = []
    for r in range(w.size):
        try:
            got = int(store.get(f"hneurons/seq/{r}").decode()) if store.check([f"hneurons/seq/{r}"]) else 0
        except Exception:  # the store itself is gone with its host: say what we know
            return "another rank stopped (the launcher's store is gone too)"
        if got < seq:
            late.append(r)
    if not late:
        return "another rank stopped"
    return ", ".join(f"rank {r}" for r in late) + f" of {w.size} died or stopped before it"


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` on every rank, in rank order (``[obj]`` in one process)."""
    w = world()
    if w.size == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * w.size
    _collective("gathering results", lambda: dist.all_gather_object(out, obj))
    return out


def gather_sharded(mine: Sequence[T]) -> list[T]:
    """Results of :func:`shard`-ed work from every rank, in the one-process order, on every rank."""
    return unshard(all_gather(list(mine)))


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (what rank 0 decided, e.g. the neuron sets to check)."""
    w = world()
    if w.size == 1:
        return obj
    import torch.distributed as dist

    box = [obj if w.is_main else None]
    _collective("receiving rank 0's decision", lambda: dist.broadcast_object_list(box, src=0))
    return box[0]


def barrier(what: str = "waiting for the other ranks") -> None:
    """Wait until every rank gets here (a no-op in one process)."""
    w = world()
    if w.size == 1:
        return
    _collective(what, _barrier)


def _barrier() -> None:
    import torch.distributed as dist

    # an object gather instead of dist.barrier(): NCCL's barrier needs a device guess, gloo's does not
    dist.all_gather_object([None] * world().size, None)


# ---------------------------------------------------------------------------------------------
# Per-rank resume logs
# ---------------------------------------------------------------------------------------------


def shard_log(path: Path) -> Path:
    """Where this rank appends its finished chunks: ``path`` itself in one process, else
    ``<dir>/.shards/<name>.rank<r>of<n><suffix>`` (a hidden folder, so no stage hashes it)."""
    w = world()
    if w.size == 1:
        return path
    return path.parent / ".shards" / f"{path.stem}.rank{w.rank}of{w.size}{path.suffix}"


def shard_files(path: Path) -> list[Path]:
    """Every rank's shard file of ``path`` on disk (any rank, any number of ranks)."""
    folder = path.parent / ".shards"
    return sorted(folder.glob(f"{path.stem}.rank*of*{path.suffix}")) if folder.is_dir() else []


def fold_shard_logs(path: Path) -> None:
    """Before a log is read: rank 0 appends what shard logs of an interrupted run hold to ``path``
    and deletes them (readers drop repeated keys), so the rerun resumes from every finished shard,
    whatever the number of ranks then or now."""
    from hneurons.rundir import append_jsonl, read_jsonl

    if is_main():
        for p in shard_files(path):
            append_jsonl(path, read_jsonl(p))
            p.unlink()
    barrier(f"folding the shard logs of {path.name}")


def merge_shard_logs(path: Path, mine: Sequence[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """After a sharded loop: every rank's chunk records in the one-process order, on every rank.

    ``mine`` holds this rank's records chunk by chunk, already in :func:`shard_log`; rank 0
    appends all of them to ``path`` in order, then each rank deletes its shard log. In one
    process the records are already in ``path`` and this returns ``mine``.
    """
    from hneurons.rundir import append_jsonl

    merged = gather_sharded(list(mine))
    w = world()
    if w.size > 1:
        records = [rec for chunk in merged for rec in chunk]
        if w.is_main and records:
            append_jsonl(path, records)
        barrier(f"merging the shard logs of {path.name}")
        shard_log(path).unlink(missing_ok=True)
    return merged
