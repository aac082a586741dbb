"""How the report writes numbers: one place, used by the Python that builds tables and, as Jinja
filters, by the templates.

Every formatter accepts anything a JSON file may hold and returns an em dash for null, missing,
non-numeric or non-finite values, so a hand-edited or half-written result file shows a gap in
a table instead of an exception.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from hneurons.core.arch import neuron_label

__all__ = ["FILTERS", "ci", "count", "isnum", "neuron", "num", "pct", "pct_ci", "seconds", "sig"]

DASH = "—"


def isnum(x: Any) -> bool:
    """A finite JSON number (``True``/``False`` are not numbers here)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def num(x: Any, nd: int = 3) -> str:
    """A number with ``nd`` decimals."""
    return f"{x:.{nd}f}" if isnum(x) else DASH


def pct(x: Any, nd: int = 1) -> str:
    """A fraction in [0, 1] as a percentage without the sign (the headers say %)."""
    return f"{100 * x:.{nd}f}" if isnum(x) else DASH


def sig(x: Any, digits: int = 4) -> str:
    """A value such as the regularisation strength C, to ``digits`` significant digits
    (79.72226578054777 → 79.72); anything that is not a number is shown as it is."""
    return f"{x:.{digits}g}" if isnum(x) else DASH if x is None else str(x)


def count(x: Any) -> str:
    """An integer with thousands separators."""
    return f"{int(x):,}" if isnum(x) else DASH


def ci(pair: Any, fmt: Callable[[Any], str] = num) -> str:
    """``[lo, hi]`` of a confidence interval, or the empty string when there is none."""
    if (isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2
            and any(isnum(v) for v in pair)):
        return f"[{fmt(pair[0])}, {fmt(pair[1])}]"
    return ""


def pct_ci(pair: Any) -> str:
    """A confidence interval of a fraction, in percent."""
    return ci(pair, pct)


def seconds(x: Any) -> str:
    """A duration in the largest unit that keeps it readable."""
    if not isnum(x):
        return DASH
    if x < 120:
        return f"{x:.1f} s"
    if x < 7200:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.2f} h"


def neuron(entry: Any) -> str:
    """A neuron of h_neurons.json by its ``name`` when the file carries one, else the one label
    format of :func:`hneurons.core.arch.neuron_label` (``L3.N17``, ``L3.E5.N17``)."""
    if not isinstance(entry, dict):
        return DASH
    if isinstance(entry.get("name"), str) and entry["name"]:
        return entry["name"]
    expert = entry.get("expert")
    return neuron_label(int(entry["layer"]), int(entry["neuron"]), expert if expert is not None else None)


# The Jinja filters of the same names (``{{ x|pct }}``, ``{{ pair|ci }}``).
FILTERS: dict[str, Callable[..., str]] = {"num": num, "pct": pct, "count": count, "ci": ci, "pct_ci": pct_ci,
                                          "seconds": seconds, "neuron": neuron, "sig": sig}
