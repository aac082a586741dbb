"""The run directory: manifest, one folder per stage, atomic writes, skip-if-unchanged.

Layout::

    runs/<name>/
      manifest.json            resolved config, versions, model fingerprint, seeds, git commit, stage log
      responses/ features/ probe/ detect/ intervene/ origin/   one folder per stage
      report.html

Every file is written atomically (:mod:`hneurons.rundir.files`). A stage records the fingerprint of its
inputs (its config section, the model fingerprint and the fingerprints of the files it reads) and
the sha256 of every file it wrote in ``<stage>/_done.json`` when it finishes; re-running skips it
while that fingerprint is unchanged *and* its files still hash as recorded, and a stage verifies the
files of the stages before it, so a damaged artefact is named instead of silently used. This fails
closed: a stage the manifest calls done, or whose files are about to be used, with a missing or
unreadable marker is damaged. The hashes sit beside the files they cover, so they catch accidental
damage and truncation, not a deliberate edit that rewrites the marker too (docs/SECURITY.md).
"""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hneurons.errors import HNeuronsError, StageError
from hneurons.rundir.files import (append_jsonl, atomic_path, default_file_mode, file_fingerprint, file_sha256,
                                   fingerprint_of, read_json, read_jsonl, repair_jsonl, unfinished_chunks, write_json)

STAGES = ("responses", "features", "probe", "detect", "intervene", "origin", "report")
DONE_FILE = "_done.json"

__all__ = ["DONE_FILE", "STAGES", "RunDir", "append_jsonl", "atomic_path", "default_file_mode", "file_fingerprint",
           "file_sha256", "fingerprint_of", "package_versions", "read_json", "read_jsonl", "repair_jsonl",
           "unfinished_chunks", "write_json"]


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
