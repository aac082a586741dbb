"""The run directory: manifest, one folder per stage, atomic writes, skip-if-unchanged.

Layout::

    runs/<name>/
      manifest.json            resolved config, versions, model fingerprint, seeds, git commit, stage log
      responses/ features/ probe/ detect/ intervene/ origin/   one folder per stage
      report.html

Every file is written to a temporary name and renamed into place, so an interrupted run never
leaves a half-written file that a later stage would read. A stage records the fingerprint of its
inputs (its config section, the model fingerprint and the fingerprints of the files it reads) in
``<stage>/_done.json`` when it finishes; re-running skips it while that fingerprint is unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hneurons.errors import StageError

STAGES = ("responses", "features", "probe", "detect", "intervene", "origin", "report")
DONE_FILE = "_done.json"


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


def append_jsonl(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    """Append records and fsync, so finished work survives an interruption."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("a", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(_clean_nan(rec), default=_json_default, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSONL file; a torn last line (interrupted write) is dropped, other bad lines are errors."""
    p = Path(path)
    if not p.is_file():
        return []
    lines = p.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines):
                break  # torn final line from an interrupted append; its work is redone
            raise StageError(f"{p} line {i}: not valid JSON; delete the file to redo that work") from None
    return out


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """sha256 (first 16 hex) of a file's bytes, for stage input fingerprints."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


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
        """The manifest, or an empty one for a new run."""
        return json.loads(self.manifest_path.read_text()) if self.manifest_path.is_file() else {}

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

    def is_done(self, stage: str, inputs_fp: str) -> bool:
        """Whether a stage finished with exactly these inputs (so it can be skipped)."""
        done = self.root / stage / DONE_FILE
        if not done.is_file():
            return False
        try:
            return json.loads(done.read_text()).get("inputs") == inputs_fp
        except json.JSONDecodeError:
            return False

    def mark_done(self, stage: str, inputs_fp: str, seconds: float, summary: dict[str, Any] | None = None) -> None:
        """Record a finished stage (its input fingerprint, wall time and a summary) in folder and manifest."""
        write_json(self.root / stage / DONE_FILE, {"inputs": inputs_fp, "seconds": seconds, "summary": summary or {}})
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

    def invalidate(self, stage: str) -> None:
        """Forget that a stage finished (``--force``); its partial outputs stay for resuming."""
        done = self.root / stage / DONE_FILE
        if done.is_file():
            done.unlink()
