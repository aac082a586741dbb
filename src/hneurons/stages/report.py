"""Report stage: render ``<run>/report.html`` from the files the other stages wrote.

Its input fingerprint covers every other stage's ``_done.json`` and the result files the report
reads, the manifest (minus the report's own entry, which changes each time the report is written)
and the report's own code and template, so the page is re-rendered exactly when something it shows
could have changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hneurons.report import REPORT_FILES, write_report
from hneurons.rundir import DONE_FILE, file_fingerprint, fingerprint_of


def _code_fingerprint() -> str:
    """Hash of the report package's sources and templates, so a new report version re-renders old runs."""
    pkg = Path(__file__).resolve().parent.parent / "report"
    return fingerprint_of({p.relative_to(pkg).as_posix(): file_fingerprint(p) for p in sorted(pkg.rglob("*"))
                           if p.suffix in (".py", ".html")})


def inputs(ctx: Any) -> dict[str, Any]:
    """Fingerprints of everything the report shows."""
    root = ctx.rundir.root
    files = {}
    for stage, names in REPORT_FILES.items():
        for name in (DONE_FILE, *names):
            p = root / stage / name
            files[f"{stage}/{name}"] = file_fingerprint(p) if p.is_file() else None
    manifest = ctx.rundir.manifest()
    manifest.get("stages", {}).pop("report", None)
    return {"files": files, "manifest": fingerprint_of(manifest), "code": _code_fingerprint()}


def run(ctx: Any) -> dict[str, Any]:
    """Write the report and return its path for the manifest."""
    path = write_report(ctx.rundir.root)
    ctx.log(f"[report] wrote {path}")
    return {"path": str(path)}
