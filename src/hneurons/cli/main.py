"""The ``hneurons`` command line: a thin layer over the stage functions.

Every command builds a :class:`~hneurons.config.Config` (preset → TOML file → ``--set`` overrides,
or the config recorded in an existing run's manifest) and calls the same Python functions a
notebook would. User errors (:class:`~hneurons.errors.HNeuronsError`) are printed as one line and
exit with status 2; no traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hneurons.cli.judge import register as register_judge_command
from hneurons.cli.apply import register as register_use_commands
from hneurons.cli.config import register as register_config_command
from hneurons.cli.extras import register_compare, register_plan
from hneurons.cli.help import DTYPES, PRESET_NAMES, SET_METAVAR, STAGES, choices
from hneurons.cli.help import install as install_help
from hneurons.cli.scale import register as register_scale_commands
from hneurons.cli.serve import register as register_serve_command
from hneurons.cli.trust import OfflineOpt
from hneurons.cli.trust import register as register_trust_commands
from hneurons.errors import HNeuronsError

install_help()
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find, test and use hallucination-associated neurons (H-Neurons) in causal LMs.")
console = Console(stderr=True)

Preset = Annotated[Optional[str], typer.Option("--preset", "-p", metavar=choices(PRESET_NAMES), help=(
    "preset (default: default; an existing run keeps its own config)"))]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML file with config sections")]
Sets = Annotated[Optional[list[str]], typer.Option("--set", "-s", metavar=SET_METAVAR, help=(
    "override, e.g. --set responses.k=5 (repeatable); every key, its meaning and default: hneurons config show"))]
Force = Annotated[bool, typer.Option("--force", help="re-run even if inputs are unchanged")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="HF model directory, .gguf file, or gemma-3-270m (the packaged base model; default: embedded SmolLM2-135M-Instruct)")]
RunDirArg = Annotated[Path, typer.Argument(help="run directory (e.g. runs/default)")]


def package_version() -> str:
    """The installed distribution's version, or the source tree's ``hneurons.__version__`` (run from a checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hneurons")
    except PackageNotFoundError:
        from hneurons import __version__

        return __version__


def _print_version(on: bool) -> None:
    if on:
        print(f"hneurons {package_version()}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="print the package version and exit")] = False) -> None:
    """Find, test and use hallucination-associated neurons (H-Neurons) in causal LMs."""


def _offline(on: bool) -> None:
    """``--offline``: no connection at all from here on (endpoints are refused where they would open)."""
    if on:
        from hneurons.trust import go_offline

        go_offline()


def _log(message: str) -> None:
    """Stage progress lines; markup off, so "[probe] …" is printed as written, not read as a style."""
    console.print(message, markup=False, highlight=False)


def _config(preset: str | None, config: Path | None, sets: list[str] | None, model: str | None,
            run_dir: Path | None = None):
    """Resolve the config: an existing run's manifest wins over the preset, then file and --set.

    The preset is checked even when the run's own config wins, and a preset given for an existing
    run is reported as not applied instead of being ignored in silence.
    """
    from hneurons.config import PRESETS, load_config, parse_overrides
    from hneurons.errors import ConfigError

    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    overrides = list(sets or [])
    if model is not None:
        overrides.append(f"model.name={model}")
    manifest = (run_dir / "manifest.json") if run_dir else None
    if manifest is not None and manifest.is_file() and config is None:
        from hneurons.trust import run_config

        # the recorded config without what only the caller may choose (model, remote code, URLs), then --set
        cfg = run_config(run_dir, parse_overrides(overrides))
        if preset is not None and load_config(preset, overrides=overrides).to_dict() != cfg.to_dict():
            _log(f"note: {run_dir} has its own config, which differs from preset {preset!r}; the run's config wins "
                 "(change values with --set, or use a new run directory for that preset)")
        return cfg
    return load_config(preset or "default", file=config, overrides=overrides)


def _run_dir(positional: Path | None, runs: Path | None, name: str | None, preset: str | None) -> Path:
    """``hneurons run RUN_DIR`` is ``--runs PARENT --name NAME``; both ways at once must name the same folder."""
    from hneurons.errors import ConfigError

    if positional is None:
        return (runs or Path("runs")) / (name or preset or "default")
    implied = (runs or positional.parent) / (name or positional.name)
    if implied.resolve() != positional.resolve():
        raise ConfigError(f"run directory {positional} disagrees with --runs/--name ({implied}); give one of them")
    return positional


@app.command()
def run(
    run_dir_arg: Annotated[Optional[Path], typer.Argument(
        metavar="RUN_DIR", help="run directory to create or resume (= --runs PARENT --name NAME)")] = None,
    preset: Preset = None,
    config: ConfigFile = None,
    sets: Sets = None,
    model: ModelOpt = None,
    name: Annotated[Optional[str], typer.Option("--name", "-n", help="run directory name under --runs")] = None,
    runs: Annotated[Optional[Path], typer.Option("--runs", help="parent folder of run directories (default: runs)")] = None,
    force: Force = False,
    stages: Annotated[Optional[list[str]], typer.Option("--stage", metavar=choices(STAGES),
                                                        help="run only these stages (repeatable)")] = None,
    offline: OfflineOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="warnings and errors only, no progress bars")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="also debug lines")] = False,
) -> None:
    """Run every stage in order and write the HTML report (resumes an interrupted run).

    Every log line, at every level and with a timestamp, is also appended to RUN_DIR/run.log.
    """
    from hneurons import log
    from hneurons.errors import ConfigError
    from hneurons.pipeline import run_all

    if quiet and verbose:
        raise ConfigError("--quiet and --verbose contradict each other; give one of them")
    log.configure(quiet=quiet, verbose=verbose)
    _offline(offline)
    run_dir = _run_dir(run_dir_arg, runs, name, preset)
    cfg = _config(preset, config, sets, model, run_dir)
    with log.run_log(run_dir):
        report = run_all(cfg, run_dir, stages=stages, force=force, log=log.say)
    console.print(f"[bold green]done[/]: run directory {run_dir}")
    if report.is_file():
        console.print(f"report: {report.resolve()}")


def _stage_command(stage: str, doc: str, register: bool = True) -> Callable[..., None]:
    def command(
        run_dir: RunDirArg,
        preset: Preset = None,
        config: ConfigFile = None,
        sets: Sets = None,
        model: ModelOpt = None,
        force: Force = False,
        offline: OfflineOpt = False,
    ) -> None:
        from hneurons import log
        from hneurons.pipeline import Context, resolve_prompt_format, run_stage
        from hneurons.rundir import RunDir

        _offline(offline)
        cfg = _config(preset, config, sets, model, run_dir)
        with log.run_log(run_dir):  # one RUN_DIR/run.log for `run` and the stage commands
            switched = resolve_prompt_format(cfg, log.say)
            rd = RunDir(run_dir)
            if not rd.manifest_path.is_file():
                rd.init_manifest(cfg.to_dict(), None, cfg.seed)
                if switched:
                    rd.update_manifest(prompt_format=switched)
            run_stage(Context(cfg, rd, log=log.say), stage, force=force)

    command.__doc__ = doc
    if register:
        app.command(name=stage)(command)
    return command


_stage_command("responses", "Sample K responses per TriviaQA question, judge, keep consistent questions, locate answer spans, split.")
_stage_command("features", "Extract CETT features (answer / other regions) for the labelled responses.")
_stage_command("probe", "Fit the L1 probe over a C path, choose C, read off the H-Neurons, check stability.")
_stage_command("detect", "Evaluate hallucination detection on TriviaQA, NQ-Open, BioASQ and NonExist against baselines.")
_stage_command("intervene", "Scale H-Neurons by alpha during generation and measure compliance on four benchmarks.")
_origin = _stage_command("origin", "", register=False)
Checkpoints = Annotated[Optional[str], typer.Option(
    "--checkpoints", help="training checkpoints A,B,C (directories, or REPO@REVISION in the Hugging Face cache): "
                          "drift to the final model and probe transfer per checkpoint (= --set origin.checkpoints=...)")]


@app.command(name="origin")
def origin(run_dir: RunDirArg, preset: Preset = None, config: ConfigFile = None, sets: Sets = None,
           model: ModelOpt = None, force: Force = False, offline: OfflineOpt = False,
           checkpoints: Checkpoints = None) -> None:
    """Base-model transfer and parameter drift (needs --set origin.base_model=PATH), and along training checkpoints."""
    _origin(run_dir, preset, config, [*(sets or []), f"origin.checkpoints={checkpoints}"] if checkpoints else sets,
            model, force, offline)


@app.command()
def report(run_dir: RunDirArg) -> None:
    """Write RUN_DIR/report.html from whatever stages have finished."""
    from hneurons.report import write_report

    path = write_report(run_dir)
    console.print(f"report: {path.resolve()}")


@app.command()
def info(model: Annotated[Optional[str], typer.Argument(help="HF model directory, .gguf file, 'embedded' or 'gemma-3-270m'")] = None,
         dtype: Annotated[str, typer.Option(metavar=choices(DTYPES), help="weights dtype")] = "auto") -> None:
    """Print a model's architecture, layers, neurons per layer and total neurons."""
    from hneurons.core.models import load_model, model_info

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
    from hneurons.core.arch import supported_architectures

    rows = supported_architectures()
    n_moe = sum(a.is_moe for _, a in rows)
    table = Table(title=f"Supported architectures (config.model_type): {len(rows) - n_moe} dense, {n_moe} "
                        "mixture-of-experts (docs/MOE.md)")
    for col in ("model_type", "layers", "down projection (neurons = its inputs)", "up", "gate", "weight layout"):
        table.add_column(col)
    for key, a in rows:
        if a.is_moe:
            shared = f" + shared {a.shared}" if a.shared else ""
            table.add_row(key, " | ".join(a.layers), escape(f"{a.experts}.down_proj[e]{shared}"),
                          escape(f"{a.experts}.gate_up_proj[e]"),
                          "(fused, interleaved)" if a.expert_format == "gpt_oss" else "(fused, gate half)",
                          f"MoE, {a.expert_format}" + (", input-weighted" if a.router else ""))
        else:
            table.add_row(key, " | ".join(a.layers), a.down_proj, a.up_proj, a.gate_proj or "-", a.weight_layout)
    Console().print(table)


register_use_commands(app)
register_serve_command(app)
register_judge_command(app)
register_plan(app)
register_compare(app)
register_trust_commands(app)
register_scale_commands(app)
register_config_command(app)


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
