"""The run directory: manifest, one folder per stage, atomic writes, skip-if-unchanged.

Layout::

    runs/<name>/
      manifest.json            resolved config, versions, model fingerprint, seeds, git commit, stage log
      responses/ features/ probe/ detect/ intervene/ origin/   one folder per stage
      report.html

Every file is written to a temporary name and renamed into place, so an interrupted run never
leaves a half-written file that a later stage would read. A stage records the fingerprint of its
inputs (its config section, the model fingerprint and the fingerprints of the files it reads) and
the sha256 of every file it wrote in ``<stage>/_done.json`` when it finishes; re-running skips it
while that fingerprint is unchanged *and* its files still hash as recorded, and a stage verifies the
files of the stages before it, so a damaged artefact is named instead of silently used. This fails
closed: a stage the manifest calls done, or whose files are about to be used, with a missing or
unreadable marker is damaged. The hashes sit beside the files they cover, so they catch accidental
damage and truncation, not a deliberate edit that rewrites the marker too (docs/SECURITY.md).

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
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hneurons.errors import HNeuronsError, StageError

STAGES = ("responses", "features", "probe", "detect", "intervene", "origin", "report")
DONE_FILE = "_done.json"

log = logging.getLogger("hneurons")


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


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour changes results."""
    from importlib import metadata

    names = ["hneurons", "torch", "transformers", "numpy", "scipy", "scikit-learn", "safetensors", "pyarrow", "gguf", "tokenizers"]
    out = {"python": platform.python_version()}
    for n in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[n] = metadata.version(n)
    return out


@dataclass
class RunDir:
    """A run directory on disk; stages read and write only through files in it."""

    root: Path
    _hashes: dict[tuple[str, int, int, int], str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def stage_dir(self, stage: str) -> Path:
        """The folder of a stage (created on demand)."""
        if stage not in STAGES:
            raise StageError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        d = self.root / stage
        d.mkdir(parents=True, exist_ok=True)
        return d

    def path(self, stage: str, name: str) -> Path:
        """Path of a file inside a stage folder."""
        return self.stage_dir(stage) / name

    def manifest(self) -> dict[str, Any]:
        """The manifest, or an empty one for a new run; one that is not a JSON object is refused."""
        if not self.manifest_path.is_file():
            return {}
        from hneurons.trust import read_manifest

        return read_manifest(self.root)

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        """Merge top-level fields into the manifest and write it atomically."""
        m = self.manifest()
        m.update(fields)
        write_json(self.manifest_path, m)
        return m

    def init_manifest(self, config: dict[str, Any], model: dict[str, Any] | None, seed: int) -> None:
        """Record config, versions, model identity, seeds and git commit at the start of a run."""
        m = self.manifest()
        if model is not None or "model" not in m:  # a resumed run keeps the model it recorded
            m["model"] = model
        m.update({
            "config": config,
            "seed": seed,
            "versions": package_versions(),
            "git_commit": _git_commit(),
            "created": m.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        m.setdefault("stages", {})
        write_json(self.manifest_path, m)

    def _sha256(self, path: Path) -> str:
        """A file's sha256, memoised by (size, mtime) so one process hashes a large artefact once."""
        st = path.stat()
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = file_sha256(path)
        return self._hashes[key]

    def default_outputs(self, stage: str) -> list[Path]:
        """The files a stage owns unless it says otherwise: the plain files directly in its folder.

        Sub-folders (e.g. ``responses/judge_cache``), temporary files and SQLite caches are left
        out: caches change on every use and say nothing about the stage's results.
        """
        d = self.root / stage
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if p.is_file() and p.name != DONE_FILE
                      and not p.name.startswith(".") and ".sqlite3" not in p.name)

    def marker(self, stage: str) -> tuple[dict[str, Any] | None, str | None]:
        """``(marker, problem)``: the done-marker, or why the files it vouches for cannot be checked (absent: both None)."""
        done = self.root / stage / DONE_FILE
        if not done.is_file():
            return None, None
        try:
            marker = json.loads(done.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None, "is not valid JSON"
        if not isinstance(marker, dict):
            return None, "is not a JSON object"
        if "skipped" not in marker and not isinstance(marker.get("outputs"), dict):
            return None, "records no file hashes"
        return marker, None

    def manifest_says_done(self, stage: str) -> bool:
        """Whether the manifest records the stage as finished (then its marker must vouch for its files)."""
        try:
            entry = (self.manifest().get("stages") or {}).get(stage)
        except (HNeuronsError, AttributeError):
            return False
        return isinstance(entry, dict) and entry.get("status") == "done"

    def damaged(self, stage: str, required: bool = False) -> list[tuple[Path, str]]:
        """``(file, problem)`` for every file of a finished stage that is missing or changed.

        Fails closed: a finished stage (the manifest says so, or ``required``) whose done-marker is
        missing or unreadable is damaged, since nothing vouches for its files any more.
        """
        marker, problem = self.marker(stage)
        done = self.root / stage / DONE_FILE
        if problem is not None:
            return [(done, f"{problem}, so the files of `{stage}` cannot be checked")]
        if marker is None:
            if required or self.manifest_says_done(stage):
                return [(done, f"is missing, so the files of `{stage}` cannot be checked")]
            return []
        bad = []
        for rel, digest in (marker.get("outputs") or {}).items():
            path = self.root / rel
            if not path.resolve().is_relative_to(self.root.resolve()):  # e.g. "../../x": not this run's file
                bad.append((done, f"records {rel!r}, which is not a file of this run"))
            elif not path.is_file():
                bad.append((path, "is missing"))
            elif self._sha256(path) != digest:
                bad.append((path, f"does not match the sha256 recorded when `{stage}` wrote it (damaged or changed since)"))
        return bad

    def verify(self, stage: str, required: bool = False) -> None:
        """Refuse a finished stage's damaged or missing files, naming the file and the command that rebuilds it
        (``required``: the caller is about to use them, so a missing marker is damage too)."""
        bad = self.damaged(stage, required=required)
        if bad:
            path, problem = bad[0]
            more = f" (and {len(bad) - 1} more file(s))" if len(bad) > 1 else ""
            fix = f"hneurons {stage} {self.root}" + ("" if stage == "report" else " --force")
            raise StageError(f"{path} {problem}{more}; rebuild it with `{fix}`")

    def is_done(self, stage: str, inputs_fp: str) -> bool:
        """Whether a stage finished with exactly these inputs and its files still hash as recorded."""
        marker, _ = self.marker(stage)
        if marker is None or marker.get("inputs") != inputs_fp or "outputs" not in marker:
            return False
        return not self.damaged(stage)

    def mark_done(self, stage: str, inputs_fp: str, seconds: float, summary: dict[str, Any] | None = None,
                  outputs: Iterable[Path] | None = None) -> None:
        """Record a finished stage in folder and manifest: input fingerprint, the sha256 of each of
        its files (``outputs``, default :meth:`default_outputs`), wall time and a summary.

        The marker replaces the old one in one rename, so ``--force`` never leaves a stage without one.
        """
        files = self.default_outputs(stage) if outputs is None else sorted(Path(p) for p in outputs)
        hashes = {p.relative_to(self.root).as_posix(): self._sha256(p) for p in files}
        write_json(self.root / stage / DONE_FILE, {"inputs": inputs_fp, "seconds": seconds, "summary": summary or {},
                                                   "outputs": hashes})
        m = self.manifest()
        m.setdefault("stages", {})[stage] = {"status": "done", "seconds": round(seconds, 2), "inputs": inputs_fp,
                                              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(summary or {})}
        write_json(self.manifest_path, m)

    def mark_skipped(self, stage: str, reason: str) -> None:
        """Record that a stage did not run and why (the report shows the reason)."""
        write_json(self.root / stage / DONE_FILE, {"inputs": None, "skipped": reason})
        m = self.manifest()
        m.setdefault("stages", {})[stage] = {"status": "not run", "reason": reason}
        write_json(self.manifest_path, m)
