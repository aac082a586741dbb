"""The report's HTML: Jinja2 templates with autoescaping, and the small types they render.

Every value reaches the page through a template with autoescaping on, so text from a run
directory (a model name, a reason, a dataset note) can never inject markup. Templates live in
``report/templates/``: ``page.html`` (the self-contained page: CSS, Content-Security-Policy, the
image check), ``macros.html`` (the table, figure, "not run" and verdict macros every page shares),
``section.html`` (one section's frame) and ``sections/<id>.html`` (one per section).

Another page (e.g. a comparison of runs) adds its template here, say ``templates/compare.html``
starting ``{% extends "page.html" %}{% import "macros.html" as m %}`` with a ``content`` block, builds
:class:`Table` objects and figure URIs (:mod:`hneurons.report.figures`) in Python, and calls
``render("compare.html", title=..., ...)``: same CSS, tables, figures and offline guarantees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from hneurons.report.fmt import FILTERS

__all__ = ["Cell", "Table", "env", "render"]


@dataclass(frozen=True)
class Cell:
    """A table cell with more than text: a smaller note after it, code formatting, or a link to an
    anchor on the same page (``href`` is an element id, never a URL: the page loads nothing)."""

    text: str
    note: str = ""
    code: bool = False
    href: str = ""


@dataclass(frozen=True)
class Table:
    """A table for the ``table`` macro: cells are ``str`` or :class:`Cell`; ``num`` lists the
    right-aligned (numeric) columns; ``classes`` gives each row a CSS class (or "")."""

    header: Sequence[str]
    rows: Sequence[Sequence[str | Cell]]
    num: frozenset[int] = field(default_factory=frozenset)
    classes: Sequence[str] = ()

    @classmethod
    def of(cls, header: Sequence[str], rows: Sequence[Sequence[str | Cell]], num: Sequence[int] = (),
           classes: Sequence[str] = ()) -> Table:
        """Build with ``num`` given as any sequence of column indices."""
        return cls(tuple(header), [tuple(r) for r in rows], frozenset(num), tuple(classes))


@cache
def env() -> Environment:
    """The one Jinja environment: package templates, autoescaping, undefined names are errors
    (a typo in a template fails the tests instead of rendering an empty cell), and the number
    formatters of :mod:`hneurons.report.fmt` as filters."""
    e = Environment(loader=PackageLoader("hneurons.report", "templates"), autoescape=True,
                    undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    e.filters.update(FILTERS)
    return e


def render(template: str, **context: Any) -> str:
    """Render one template of the package with ``context``."""
    return env().get_template(template).render(**context)
