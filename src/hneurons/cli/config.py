"""``hneurons config show``: every config key, what it means, its default and the value a preset or a run uses.

Reads presets, TOML files and run directories only: a run directory is data (its manifest is
parsed, no model is resolved or loaded, no connection opened; caller-only keys it records are
dropped with a note, as when the run is continued). The plain Python call is
``hneurons.config.describe(cfg)`` on a config from ``load_config`` or ``config_keys.recorded_config``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from hneurons.cli.help import PRESET_NAMES, SET_METAVAR, choices


def _shown(value: Any) -> str:
    """A value as one would type it after ``--set key=`` (strings quoted, so spaces stay visible)."""
    return "None" if value is None else json.dumps(value, ensure_ascii=False)


def render(rows: list[Any], header: str, changed_only: bool = False) -> str:
    """Aligned text: ``key  type  default  value  # description``, changed values marked with ``*``."""
    rows = [r for r in rows if r.changed] if changed_only else rows
    cells = [(r.key, r.type, _shown(r.default), ("* " if r.changed else "  ") + _shown(r.value), "# " + r.description)
             for r in rows]
    titles = ("key", "type", "default", "  value", "# description")
    widths = [min(max(len(c[i]) for c in [titles, *cells]), cap) for i, cap in enumerate((40, 32, 32, 34))]
    lines = [f"# {header}  (* = differs from the default)"]
    for c in [titles, *cells]:
        lines.append("  ".join(c[i].ljust(widths[i]) for i in range(4)) + "  " + c[4])
    return "\n".join(lines) + "\n"


RunDirOpt = Annotated[Optional[Path], typer.Argument(
    metavar="RUN_DIR", help="a run directory: show the config recorded in its manifest")]
PresetOpt = Annotated[Optional[str], typer.Option("--preset", "-p", metavar=choices(PRESET_NAMES),
                                                  help="preset to show (default: default)")]
SetsOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", metavar=SET_METAVAR,
                                                     help="override, e.g. --set responses.k=5 (repeatable)")]
ChangedOpt = Annotated[bool, typer.Option("--changed", help="only keys whose value differs from the default")]
JsonOpt = Annotated[bool, typer.Option("--json", help="a JSON list of {key, type, default, value, description, ...}")]


def show(
    run_dir: RunDirOpt = None,
    preset: PresetOpt = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML file with config sections")] = None,
    sets: SetsOpt = None,
    changed: ChangedOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Print every config key (section.key), its meaning, default and resolved value for a preset or a run directory."""
    from hneurons.config import describe, load_config, parse_overrides
    from hneurons.config_keys import recorded_config
    from hneurons.errors import ConfigError

    overrides = parse_overrides(list(sets or []))
    if run_dir is not None:
        if preset is not None or config is not None:
            raise ConfigError(f"config show {run_dir}: a run directory has its own config; drop --preset/--config "
                              "(use --set to see a change on top of it)")
        cfg = recorded_config(run_dir, overrides, note=lambda line: print(line, file=sys.stderr))
        header = f"config recorded in {run_dir / 'manifest.json'}"
    else:
        cfg = load_config(preset or "default", file=config, overrides=overrides)
        header = f"preset {preset or 'default'}" + (f" + {config}" if config else "")
    rows = describe(cfg)
    if as_json:
        sys.stdout.write(json.dumps([r.to_dict() for r in rows if r.changed or not changed], indent=2) + "\n")
    else:
        sys.stdout.write(render(rows, header + (" + --set" if overrides else ""), changed))


def register(app: typer.Typer) -> None:
    """Add the ``config`` command group (``config show``)."""
    group = typer.Typer(no_args_is_help=True, help="Inspect configuration: presets, defaults and a run's recorded config.")
    group.command(name="show")(show)
    app.add_typer(group, name="config")
