"""A run directory's files as the report sees them: loaded leniently, a missing or malformed file
becomes a reason to show, never an exception that takes the whole page down.

The report reads the JSON files every stage writes (docs/RUNDIR.md) and nothing else, so it can
be rebuilt from a copied run folder on a machine without the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hneurons.errors import StageError
from hneurons.rundir import read_json

__all__ = ["MALFORMED", "REPORT_FILES", "NotRun", "Run", "open_run"]

# Files the report reads, per stage (besides each stage's _done.json and the manifest); the report
# stage fingerprints exactly these, so the page is re-rendered when one of them changes.
REPORT_FILES: dict[str, tuple[str, ...]] = {
    "responses": ("stats.json", "labelled.parquet"),
    "features": ("train/index.json", "heldout/index.json"),  # each index holds its chunks' sha256
    "probe": ("h_neurons.json", "path.json", "stability.json", "rules.json"),
    "detect": ("detect.json", "risk_coverage.json"),
    "intervene": ("intervene.json", "qa.json"),
    "origin": ("origin.json",),
}

# What a result file of the wrong shape raises while a section reads it (a list where a dict was
# expected, a string where a number was): shown as "malformed", for that section only.
MALFORMED = (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError)


class NotRun(Exception):
    """A section (or part of one) has nothing to show; the message says why and what to do."""


@dataclass
class Run:
    """A run directory: its root and manifest; stage files are read on demand."""

    root: Path
    manifest: dict[str, Any]

    def stage_reason(self, stage: str) -> str | None:
        """Why a stage did not run, if the manifest or its _done.json says so."""
        entry = (self.manifest.get("stages") or {}).get(stage) or {}
        if entry.get("status") == "not run":
            return str(entry.get("reason") or "no reason recorded")
        skipped = self.done(stage).get("skipped")
        return str(skipped) if skipped else None

    def done(self, stage: str) -> dict[str, Any]:
        """The stage's ``_done.json`` (empty when absent or unreadable)."""
        path = self.root / stage / "_done.json"
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return {}
        return data if isinstance(data, dict) else {}

    def finished(self, stage: str) -> bool:
        """The stage wrote its ``_done.json`` and was not skipped."""
        return (self.root / stage / "_done.json").is_file() and not self.stage_reason(stage)

    def load(self, stage: str, name: str) -> tuple[dict[str, Any] | None, str | None]:
        """``(data, None)`` or ``(None, reason)`` for ``<stage>/<name>``."""
        reason = self.stage_reason(stage)
        if reason:
            return None, reason
        path = self.root / stage / name
        if not path.is_file():
            return None, f"{stage}/{name} is missing; run `hneurons {stage} {self.root}` to produce it"
        try:
            data = read_json(path)
        except StageError as exc:
            return None, str(exc)
        except (ValueError, RecursionError, OSError) as exc:  # not UTF-8, a 5,000-digit number, 10^5-deep nesting
            return None, f"{stage}/{name} could not be read ({type(exc).__name__}); delete it and re-run the {stage} stage"
        if not isinstance(data, dict):
            return None, f"{stage}/{name} is not a JSON object; delete it and re-run the {stage} stage"
        if data.get("status") == "not run":  # a stage that records its own skip inside its file
            return None, str(data.get("reason") or "no reason recorded")
        return data, None

    def need(self, stage: str, name: str) -> dict[str, Any]:
        """Like :meth:`load`, but a missing file raises :class:`NotRun` (the section shows why)."""
        data, reason = self.load(stage, name)
        if data is None:
            raise NotRun(reason or f"{stage}/{name} is missing")
        return data


def open_run(root: Path) -> Run:
    """The run at ``root``; a folder that is not a run directory is a one-line :class:`StageError`."""
    if not root.is_dir():
        raise StageError(f"run directory {root} does not exist; pass the folder `hneurons run` wrote")
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise StageError(f"{root} has no manifest.json, so it is not a run directory; run `hneurons run` first")
    manifest = read_json(mpath)
    if not isinstance(manifest, dict):
        raise StageError(f"{mpath} is not a JSON object; it was not written by hneurons")
    return Run(root, manifest)
