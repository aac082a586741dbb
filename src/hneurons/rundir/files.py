"""Files of a run: atomic writes with the ordinary permissions, resume logs, content hashes.

Every file is written to a temporary name and renamed into place, so an interrupted run never
leaves a half-written file that a later stage would read. ``tempfile.mkstemp`` creates that name
with mode 0600; :func:`atomic_path` gives the file the mode ``open()`` would (0666 less the umask,
0644 by default) before the rename, so colleagues can open a report written on a shared machine.

Resume logs (``*.jsonl``) are the one thing appended to in place. A process killed mid-append
leaves a torn last record; :func:`read_jsonl` truncates it away (with a warning) before anything
else is appended, and drops repeats of a record's key, so a resumed unit of work never duplicates
a record that survived.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hneurons.errors import StageError

log = logging.getLogger("hneurons")


def default_file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file: 0666 less the process umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def _clean_nan(obj: Any) -> Any:
    """JSON has no NaN: write None so every file stays valid for browsers and other tools."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_nan(v) for v in obj]
    return obj


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_file_mode())  # mkstemp makes it 0600; a run's files are for colleagues too
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write JSON (NaN/inf become null)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_clean_nan(obj), indent=2, default=_json_default, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file written by a stage, with a clear error when it is missing or broken."""
    p = Path(path)
    if not p.is_file():
        raise StageError(f"{p} is missing; run the stage that writes it first (see `hneurons run --help`)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise StageError(f"{p} line {exc.lineno}: not valid JSON ({exc.msg}); delete it and re-run its stage") from None


def repair_jsonl(path: str | os.PathLike[str]) -> int:
    """Cut a torn last record (an interrupted append) off a JSONL log; return the bytes removed.

    Appends are sequential, so only the text after the last newline can be torn. If that text is a
    whole record (the kill came just before its newline) the newline is restored instead. A log that
    is cut this way can be appended to again, and a later reader never meets a bad line mid-file.
    """
    p = Path(path)
    if not p.is_file():
        return 0
    with p.open("rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        # the tail after the last newline; read backwards in blocks so a huge log is not loaded
        pos, tail = size, b""
        while pos > 0:
            step = min(1 << 16, pos)
            fh.seek(pos - step)
            block = fh.read(step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                tail = block[nl + 1:] + tail
                pos = pos - step + nl + 1
                break
            tail = block + tail
            pos -= step
        if not tail:
            return 0
        try:
            whole = isinstance(json.loads(tail.decode("utf-8")), dict)
        except (UnicodeDecodeError, json.JSONDecodeError):
            whole = False
        if whole:
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
            removed = 0
        else:
            fh.truncate(pos)
            removed = len(tail)
        fh.flush()
        os.fsync(fh.fileno())
    if removed:
        log.warning("%s: removed a torn last record (%d bytes) left by an interrupted write; its work is redone",
                    p, removed)
    return removed


def append_jsonl(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    """Append records and fsync, so finished work survives an interruption.

    A log whose last record is torn is repaired first, so a new record never lands on a fragment.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    repair_jsonl(p)
    with p.open("a", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(_clean_nan(rec), default=_json_default, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike[str], key: Callable[[dict[str, Any]], Hashable] | None = None
               ) -> list[dict[str, Any]]:
    """Read a resume log: a torn last record is cut off the file first, other bad lines are errors.

    With ``key``, a record whose key already appeared is dropped (the first one wins), so work that
    was redone after an interruption is counted once.
    """
    p = Path(path)
    if not p.is_file():
        return []
    repair_jsonl(p)
    out: list[dict[str, Any]] = []
    seen: set[Hashable] = set()
    repeats = 0
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise StageError(f"{p} line {i}: not valid JSON; delete the file to redo that work") from None
        if not isinstance(rec, dict):
            raise StageError(f"{p} line {i}: expected a JSON object; delete the file to redo that work")
        if key is not None:
            k = key(rec)
            if k in seen:
                repeats += 1
                continue
            seen.add(k)
        out.append(rec)
    if repeats:
        log.warning("%s: ignored %d repeated record(s) of work redone after an interruption", p, repeats)
    return out


def unfinished_chunks(items: Sequence[Any], size: int, finished: Callable[[Any], bool]) -> list[tuple[int, list[Any]]]:
    """``(start, chunk)`` for every fixed-size chunk of ``items`` that has an unfinished item.

    Chunks stay where an uninterrupted run puts them (``items[0:size]``, ``items[size:2*size]`` …),
    whatever is already done, so a chunk redone after an interruption samples with the same seeds
    and row positions and reproduces the records that survived; callers append only the missing ones.
    """
    if size < 1:
        raise StageError(f"chunk size must be ≥ 1, got {size}")
    return [(s, list(items[s:s + size])) for s in range(0, len(items), size)
            if not all(finished(it) for it in items[s:s + size])]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Full sha256 of a file's bytes (the content hash recorded for every artefact)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """sha256 (first 16 hex) of a file's bytes, for stage input fingerprints."""
    return file_sha256(path)[:16]


def fingerprint_of(obj: Any) -> str:
    """Stable hash of a JSON-able object (config sections, lists of file fingerprints)."""
    text = json.dumps(_clean_nan(obj), sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
