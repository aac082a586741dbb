"""``hneurons plan`` and ``hneurons compare``: commands that read configs and run directories only.

Both are registered from :mod:`hneurons.cli.main` with one line each and load no model: ``plan``
reads a ``config.json``, ``compare`` reads finished run directories as data. Errors are
:class:`~hneurons.errors.HNeuronsError` subclasses, which the CLI prints as one line (exit 2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from hneurons.cli.help import PRESET_NAMES, SET_METAVAR, choices


def plan(
    model: Annotated[str, typer.Argument(help="config.json, a model directory, or a hub id in the local HF cache")],
    preset: Annotated[str, typer.Option("--preset", "-p", metavar=choices(PRESET_NAMES), help="preset to plan")] = "paper",
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs to plan for (0 = CPU only)")] = 0,
    gpu_mem: Annotated[float, typer.Option("--gpu-mem", help="memory per GPU in GB")] = 80.0,
    sets: Annotated[list[str] | None, typer.Option("--set", "-s", metavar=SET_METAVAR,
                                                   help="config override, e.g. --set responses.backend=vllm")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of the table")] = False,
) -> None:
    """Per stage: neurons, tokens, feature-store bytes, probe RAM, peak GPU memory, engine and time (estimates)."""
    from hneurons.plan import make_plan
    from hneurons.plan.render import render_text

    result = make_plan(model, preset=preset, gpus=gpus, gpu_mem_gb=gpu_mem, overrides=sets)
    sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n" if as_json else render_text(result))


def compare(
    runs: Annotated[list[Path], typer.Argument(help="two or more run directories")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML page to write")] = Path("compare.html"),
    as_json: Annotated[bool, typer.Option("--json", help="also print the comparison as JSON")] = False,
) -> None:
    """Compare runs side by side (models, presets or seeds): one self-contained HTML page (and JSON)."""
    from hneurons.compare import compare_runs, write_page

    result = compare_runs(runs)
    path = write_page(result, out)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    typer.echo(f"comparison: {path.resolve()}", err=True)


def register_plan(app: typer.Typer) -> None:
    """Add ``hneurons plan``."""
    app.command(name="plan")(plan)


def register_compare(app: typer.Typer) -> None:
    """Add ``hneurons compare``."""
    app.command(name="compare")(compare)
