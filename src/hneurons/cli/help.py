"""How options read in ``--help``: a flag shows no value, a choice shows its choices as ``[a|b|c]``.

Why a module: the installed typer prints a type beside every option in its rich help, so a flag
read ``--force <bool>`` (as if it took a value) and a choice read ``<str>``. Choices are spelled
with :func:`choices` as the option's metavar (the command still checks the value itself, so a bad
one is our one-line error, not typer's usage box); :func:`install` makes every boolean flag,
including the ``--help`` typer adds itself, show no type. ``tests/unit/test_cli.py`` checks the
help of every command for both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# the choices help shows, spelled here so that ``--help`` imports nothing heavy; tests/unit/test_cli.py
# keeps each equal to the values the code accepts
PRESET_NAMES = ("smoke", "default", "paper")  # hneurons.config.PRESETS
JUDGE_TASKS = ("triviaqa", "falseqa", "jailbreak", "mc")  # hneurons.judges.files.TASKS
ON_LONG = ("truncate", "refuse")  # hneurons.apply.state.ON_LONG
DTYPES = ("auto", "float32", "bfloat16", "float16")  # hneurons.core.models.pick_dtype's names (besides aliases)
STAGES = ("responses", "features", "probe", "detect", "intervene", "origin", "report")  # hneurons.rundir.STAGES
SET_METAVAR = "SECTION.KEY=VALUE"


def choices(values: Iterable[str]) -> str:
    """The metavar of an option that takes one of ``values``."""
    return "[" + "|".join(values) + "]"


def install() -> None:
    """Show no type for a boolean flag in typer's rich help (it takes no value); idempotent.

    A typer without ``TyperOption.display_type_rich`` prints no type for flags already, and is left alone.
    """
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "flags_untyped", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.flags_untyped = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
