"""``hneurons edit-model``: write a checkpoint with a run's neurons scaled, for serving engines.

Registered from :mod:`hneurons.cli.main` with one line; the work is
:func:`hneurons.intervention.edit_model.edit_model` (a plain Python call too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def edit_model_cmd(
    run_dir: Annotated[Path, typer.Argument(help="a finished run directory (its probe/h_neurons.json)")],
    alpha: Annotated[float, typer.Option("--alpha", "-a", help="scale factor α for the chosen neurons")],
    out: Annotated[Path, typer.Option("--out", "-o", help="new, empty folder for the edited checkpoint")],
    neurons: Annotated[str, typer.Option("--neurons", metavar="[h|random:SEED]", help=(
        "h (the H-Neurons) or random:SEED (the intervene stage's random_SEED control)"))] = "h",
    model: Annotated[str | None, typer.Option("--model", "-m", help="the run's model (default: the default "
                                                                     "model); a run directory never chooses it")] = None,
) -> None:
    """Write a safetensors checkpoint with the neurons' W_down columns scaled by α (serve it with vLLM or any engine)."""
    from hneurons.intervention.edit_model import EditRequest, edit_model

    path = edit_model(EditRequest(run_dir, alpha, out, neurons=neurons, model=model),
                      log=lambda line: typer.echo(line, err=True))
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Add ``hneurons edit-model``."""
    app.command(name="edit-model")(edit_model_cmd)
