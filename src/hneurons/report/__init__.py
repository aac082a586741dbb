"""The HTML report: one self-contained file built only from a run directory's files.

The report reads the JSON files every stage writes (docs/RUNDIR.md) and nothing else, so it can be
rebuilt from a copied run folder on a machine without the model. A stage that did not run, or whose
files are missing or malformed, is shown as a "not run: reason" box in its own section rather than
an empty figure or a crash, and the page carries a Content-Security-Policy that forbids every
network load: figures are inline data URIs, so it opens offline and cannot leak that it was opened.

Public API: :func:`render_report` (HTML text), :func:`write_report` (atomic write to
``<run>/report.html``) and :func:`claims` (the paper's four claims judged on a run).
:data:`REPORT_FILES` lists the files read, for the report stage's input fingerprint.

Where things are:

- ``run.py``: :class:`~hneurons.report.run.Run` loads a stage file leniently (a missing or broken
  file becomes a reason); :class:`~hneurons.report.run.NotRun` says a section has nothing to show.
- ``claims.py``: the existence / detection / impact / origin claims and their verdicts.
- ``sections.py``: the table of sections and the envelope that renders any of them.
- ``build_run.py``, ``build_results.py``: one small builder per section, returning its template's data.
- ``fmt.py``: how numbers, intervals and neuron labels are written (also the templates' filters).
- ``html.py``: the Jinja2 environment (autoescaping on) and the ``Table``/``Cell`` types.
- ``figures.py``: matplotlib figures as PNG data URIs.
- ``templates/``: ``page.html`` (CSS, CSP, image check), ``macros.html`` (table, figure, not-run,
  verdict), ``section.html`` (a section's frame), ``report.html`` and ``sections/<id>.html``.

How to add a section (e.g. a neuron explorer):

1. Write a builder ``def explorer(run: Run) -> dict[str, Any]`` in a ``build_*.py`` module: read
   files with ``run.need(stage, name)`` (raises ``NotRun`` with the reason when the file is missing)
   or ``run.load`` (returns ``(data, reason)`` for optional parts), and return plain data:
   formatted strings, :class:`~hneurons.report.html.Table` objects, figure URIs from ``figures.py``.
   Raise ``NotRun("why")`` when there is nothing to show.
2. Add ``templates/sections/explorer.html``: ``{% extends "section.html" %}``,
   ``{% import "macros.html" as m %}``, then a ``{% block content %}`` that uses ``m.table``,
   ``m.figure``, ``m.notrun`` and the filters (``|num``, ``|pct``, ``|ci``, ``|count``, ``|neuron``).
   Prose belongs here, not in Python; every ``{{ value }}`` is escaped.
3. Add one row to :data:`hneurons.report.sections.SECTIONS`:
   ``Section("explorer", "Neurons", "Neuron explorer", "probe", build_x.explorer)`` (id, navigation
   label, heading, the stage whose files it reads, builder). The navigation bar and the "not run" /
   "malformed" handling follow from that row. If it reads a new stage file, add the file to
   :data:`REPORT_FILES` so the report stage re-renders when it changes.
4. Test it on ``tests/fixtures/run_fixture`` (``tests/unit/test_report.py``), with the file present,
   missing and malformed.

Another page (e.g. comparing runs) extends ``page.html``, imports ``macros.html`` and renders through
:func:`hneurons.report.html.render`, so it shares the CSS, the tables and the figures.
"""

from __future__ import annotations

from pathlib import Path

from hneurons.report.claims import Claim
from hneurons.report.claims import evaluate as _evaluate
from hneurons.report.html import render
from hneurons.report.run import REPORT_FILES, open_run
from hneurons.report.sections import SECTIONS, render_section
from hneurons.rundir import atomic_path

__all__ = ["REPORT_FILES", "Claim", "claims", "render_report", "write_report"]


def claims(run_dir: str | Path) -> list[Claim]:
    """How each of the paper's four claims fared in a run (also the report's summary section)."""
    return _evaluate(open_run(Path(run_dir)))


def render_report(run_dir: str | Path) -> str:
    """The report for a run directory as one self-contained HTML page."""
    run = open_run(Path(run_dir))
    info = run.manifest.get("model") or {}
    model = info.get("name") or ((run.manifest.get("config") or {}).get("model") or {}).get("name") or "unknown model"
    return render("report.html", title=f"H-Neurons report: {model}", run_name=run.root.name,
                  created=str(run.manifest.get("created", "—")), fingerprint=str(info.get("fingerprint", "—")),
                  nav=SECTIONS, sections=[render_section(run, s) for s in SECTIONS])


def write_report(run_dir: str | Path) -> Path:
    """Render ``<run_dir>/report.html`` (atomically) and return its path."""
    root = Path(run_dir)
    text = render_report(root)
    out = root / "report.html"
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out
