"""The ``hneurons`` command line: a thin layer over the stage functions.

Every command builds a :class:`~hneurons.config.Config` (preset → TOML file → ``--set`` overrides,
or the config recorded in an existing run's manifest) and calls the same Python functions a
notebook would. User errors (:class:`~hneurons.errors.HNeuronsError`) are printed as one line and
exit with status 2; no traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hneurons.cli_use import register as register_use_commands
from hneurons.errors import HNeuronsError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find, test and use hallucination-associated neurons (H-Neurons) in causal LMs.")
console = Console(stderr=True)

Preset = Annotated[str, typer.Option("--preset", "-p", help="smoke | default | paper")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML file with config sections")]
Sets = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override, e.g. --set responses.k=5 (repeatable)")]
Force = Annotated[bool, typer.Option("--force", help="re-run even if inputs are unchanged")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="HF model directory or .gguf file (default: embedded SmolLM2-135M-Instruct)")]
RunDirArg = Annotated[Path, typer.Argument(help="run directory (e.g. runs/default)")]


def _log(message: str) -> None:
    """Stage progress lines; markup off, so "[probe] …" is printed as written, not read as a style."""
    console.print(message, markup=False, highlight=False)


def _config(preset: str, config: Path | None, sets: list[str] | None, model: str | None, run_dir: Path | None = None):
    """Resolve the config: an existing run's manifest wins over the preset, then file and --set."""
    from hneurons.config import load_config, parse_overrides

    overrides = list(sets or [])
    if model is not None:
        overrides.append(f"model.name={model}")
    manifest = (run_dir / "manifest.json") if run_dir else None
    if manifest is not None and manifest.is_file() and config is None:
        recorded = json.loads(manifest.read_text()).get("config") or {}
        flat = {f"{s}.{k}": v for s, sec in recorded.items() if isinstance(sec, dict) for k, v in sec.items()}
        flat["seed"] = recorded.get("seed", 0)
        # the recorded config, then this invocation's --set on top
        return load_config("paper", overrides={**flat, **parse_overrides(overrides)})
    return load_config(preset, file=config, overrides=overrides)


@app.command()
def run(
    preset: Preset = "default",
    config: ConfigFile = None,
    sets: Sets = None,
    model: ModelOpt = None,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="run directory name under --runs")] = None,
    runs: Annotated[Path, typer.Option("--runs", help="parent folder of run directories")] = Path("runs"),
    force: Force = False,
    stages: Annotated[Optional[list[str]], typer.Option("--stage", help="run only these stages (repeatable)")] = None,
) -> None:
    """Run every stage in order and write the HTML report (resumes an interrupted run)."""
    from hneurons.pipeline import run_all

    run_dir = runs / (name or preset)
    cfg = _config(preset, config, sets, model, run_dir)
    report = run_all(cfg, run_dir, stages=stages, force=force, log=_log)
    console.print(f"[bold green]done[/]: run directory {run_dir}")
    if report.is_file():
        console.print(f"report: {report.resolve()}")


def _stage_command(stage: str, doc: str) -> None:
    def command(
        run_dir: RunDirArg,
        preset: Preset = "default",
        config: ConfigFile = None,
        sets: Sets = None,
        model: ModelOpt = None,
        force: Force = False,
    ) -> None:
        from hneurons.pipeline import Context, run_stage
        from hneurons.rundir import RunDir

        cfg = _config(preset, config, sets, model, run_dir)
        rd = RunDir(run_dir)
        if not rd.manifest_path.is_file():
            rd.init_manifest(cfg.to_dict(), None, cfg.seed)
        run_stage(Context(cfg, rd, log=_log), stage, force=force)

    command.__doc__ = doc
    app.command(name=stage)(command)


_stage_command("responses", "Sample K responses per TriviaQA question, judge, keep consistent questions, locate answer spans, split.")
_stage_command("features", "Extract CETT features (answer / other regions) for the labelled responses.")
_stage_command("probe", "Fit the L1 probe over a C path, choose C, read off the H-Neurons, check stability.")
_stage_command("detect", "Evaluate hallucination detection on TriviaQA, NQ-Open, BioASQ and NonExist against baselines.")
_stage_command("intervene", "Scale H-Neurons by alpha during generation and measure compliance on four benchmarks.")
_stage_command("origin", "Base-model transfer and parameter drift (needs --set origin.base_model=PATH).")


@app.command()
def report(run_dir: RunDirArg) -> None:
    """Write RUN_DIR/report.html from whatever stages have finished."""
    from hneurons.report import write_report

    path = write_report(run_dir)
    console.print(f"report: {path.resolve()}")


@app.command()
def info(model: Annotated[Optional[str], typer.Argument(help="HF model directory, .gguf file, or 'embedded'")] = None,
         dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")] = "auto") -> None:
    """Print a model's architecture, layers, neurons per layer and total neurons."""
    from hneurons.models import load_model, model_info

    info_ = model_info(load_model(model, dtype=dtype))
    table = Table(title=f"{info_['name']}")
    table.add_column("field")
    table.add_column("value")
    for k in ("model_type", "n_layers", "d_ff", "n_neurons", "d_model", "n_parameters", "down_proj", "dtype", "device",
              "chat_template", "fingerprint", "source"):
        table.add_row(k, str(info_.get(k)))
    Console().print(table)


@app.command()
def archs() -> None:
    """List the supported architectures (the adapter table)."""
    from hneurons.arch import supported_architectures

    table = Table(title="Supported architectures (config.model_type)")
    for col in ("model_type", "layers", "down projection (neurons = its inputs)", "up", "gate", "weight layout"):
        table.add_column(col)
    for key, a in supported_architectures():
        table.add_row(key, " | ".join(a.layers), a.down_proj, a.up_proj, a.gate_proj or "-", a.weight_layout)
    Console().print(table)


register_use_commands(app)


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except HNeuronsError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted: finished work is saved; re-run the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
