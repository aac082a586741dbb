"""The report's sections: one table, and the one envelope that renders any of them.

A section is a row of :data:`SECTIONS`: an id (the HTML anchor and the template
``templates/sections/<id>.html``), a short name for the navigation bar, a heading, the stage
whose files it reads, and a builder that returns the template's context. The envelope
(:func:`render_section`) turns a :class:`~hneurons.report.run.NotRun` from the builder into a
"not run: reason" box, and a result file of the wrong shape into a "malformed" box, for that
section only: the rest of the page still renders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from hneurons.report import build_explorer, build_hooks, build_results, build_run
from hneurons.report.html import render
from hneurons.report.run import MALFORMED, NotRun, Run

__all__ = ["SECTIONS", "Section", "render_section"]


@dataclass(frozen=True)
class Section:
    """One section of the report (see the module docstring)."""

    sid: str
    nav: str
    title: str
    stage: str  # the stage whose files it reads, named when they are malformed ("" = several)
    build: Callable[[Run], dict[str, Any]]


SECTIONS: tuple[Section, ...] = (
    Section("summary", "Claims", "Which of the paper's claims held on this model", "", build_run.summary),
    Section("manifest", "Manifest", "Run manifest", "", build_run.manifest),
    Section("responses", "Responses", "Responses", "responses", build_run.responses),
    Section("probe", "H-Neurons", "H-Neurons (probe)", "probe", build_results.probe),
    Section("explorer", "Neurons", "Neuron explorer", "", build_explorer.explorer),
    Section("detect", "Detection", "Detection", "detect", build_results.detect),
    Section("risk", "Risk–coverage", "Risk–coverage", "detect", build_results.risk),
    Section("intervene", "Intervention", "Intervention", "intervene", build_results.intervene),
    Section("qa", "QA ablation", "Ablation across task types (qa)", "intervene", build_hooks.qa),
    Section("origin", "Origin", "Origin (base model)", "origin", build_results.origin),
    Section("judges", "Judges", "Judges", "", build_run.judges),
)


def render_section(run: Run, section: Section) -> Markup:
    """One section as HTML: its template with the builder's data, or the reason it has none."""
    template = f"sections/{section.sid}.html"
    try:
        return Markup(render(template, section=section, notrun=None, **section.build(run)))
    except NotRun as exc:
        reason = str(exc)
    except MALFORMED as exc:
        what = f"the {section.stage} files are" if section.stage else "a file of this run is"
        fix = f"re-run the {section.stage} stage with --force" if section.stage else "re-run the stage that wrote it"
        reason = f"{what} malformed ({type(exc).__name__}: {exc}); {fix}"
    return Markup(render("section.html", section=section, notrun=reason))
