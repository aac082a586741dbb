"""``hneurons verify`` and ``hneurons export``, and the options every command that uses a probe shares.

A run directory or probe file may come from someone else, so ``score``, ``generate`` and ``serve``
take the model, remote code and endpoints only from these options (:mod:`hneurons.trust`):
``--model``, ``--trust-remote-code``, ``--set``, ``--offline``, plus ``--probe FILE`` for a portable
probe instead of a run directory and ``--max-input-bytes`` for the largest input they read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hneurons.cli.help import SET_METAVAR
from hneurons.trust import MAX_INPUT_BYTES

console = Console(stderr=True)

ProbeOpt = Annotated[Optional[Path], typer.Option(
    "--probe", help="a probe file written by `hneurons export`, instead of a run directory (data only: it cannot run code)")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", "-s", metavar=SET_METAVAR, help="a setting on top of the run's, e.g. --set spans.llm_url=URL (repeatable)")]
TrustCodeOpt = Annotated[bool, typer.Option(
    "--trust-remote-code", help="let the model folder's own Python code (auto_map) run; only for models you trust")]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="open no network connection at all (also HNEURONS_OFFLINE=1)")]
MaxInputOpt = Annotated[int, typer.Option(
    "--max-input-bytes", min=1, help="refuse an input line, question or request larger than this, before tokenizing")]
RunDirArg = Annotated[Path, typer.Argument(help="run directory (e.g. runs/default)")]


@dataclass
class UseOptions:
    """What a command that applies a probe was given: where the probe is and the caller's choices."""

    run_dir: Path | None
    probe: Path | None
    model: str | None
    force: bool = False
    sets: list[str] | None = None
    trust_remote_code: bool = False
    offline: bool = False

    def __post_init__(self) -> None:
        if self.offline:
            from hneurons.trust import go_offline

            go_offline()

    def source(self) -> Path:
        """The run directory or probe file to read: exactly one of them."""
        from hneurons.errors import ConfigError

        if self.probe is not None and self.run_dir is not None:
            raise ConfigError(f"give a run directory ({self.run_dir}) or --probe {self.probe}, not both")
        if self.probe is None and self.run_dir is None:
            raise ConfigError("give a run directory (e.g. runs/default) or --probe FILE from `hneurons export`")
        if self.probe is not None and not self.probe.is_file():
            raise ConfigError(f"--probe {self.probe} is not a file; write one with `hneurons export RUN -o FILE`")
        return self.probe if self.probe is not None else self.run_dir  # type: ignore[return-value]

    def questions(self, first: str | None, rest: list[str] | None) -> list[str]:
        """``generate``'s positional words: with ``--probe`` there is no run directory, so all are questions."""
        from hneurons.errors import ConfigError, DataError

        words = [w for w in (first, *(rest or [])) if w is not None]
        if self.probe is None:
            self.run_dir = Path(words.pop(0)) if words else None
        elif first is not None and (Path(first) / "manifest.json").is_file():
            raise ConfigError(f"give a run directory ({first}) or --probe {self.probe}, not both")
        if not words:
            raise DataError("give at least one question, e.g. hneurons generate RUN \"Who wrote Hamlet?\"")
        return words

    def state(self) -> Any:
        """The checked probe and the caller's model (fingerprint compared before the model is imported)."""
        from hneurons.apply.state import load_state
        from hneurons.config import parse_overrides

        overrides: dict[str, Any] = parse_overrides(list(self.sets or []))
        if self.model is not None:
            overrides["model.name"] = self.model
        if self.trust_remote_code:
            overrides["model.trust_remote_code"] = True
        return load_state(self.source(), force=self.force, overrides=overrides)


def check_questions(questions: list[str], limit: int) -> None:
    """Refuse a question over the byte limit before anything is tokenized."""
    from hneurons.trust import check_text_size

    for i, q in enumerate(questions):
        check_text_size(q, limit, f"question {i + 1}")


def register(app: typer.Typer) -> None:
    """Add ``verify`` and ``export`` to ``app``."""

    @app.command()
    def verify(run_dir: RunDirArg) -> None:
        """Check every stage's files against the sha256 its done-marker recorded; exit 0 only if all verify.

        The hashes catch accidental damage and truncation, not a deliberate edit that also rewrites
        the marker (docs/SECURITY.md).
        """
        from hneurons.trust import check_run

        rows = check_run(run_dir)
        table = Table(title=f"{run_dir}: files against the sha256 recorded by each stage",
                      caption="the hashes catch damage and truncation, not a deliberate edit that also rewrites "
                              "_done.json (docs/SECURITY.md)")
        for col in ("stage", "status", "files checked", "detail"):
            table.add_column(col)
        for r in rows:
            colour = "green" if r.status == "ok" else ("red" if not r.verified else "dim")
            table.add_row(r.stage, f"[{colour}]{r.status}[/]", str(r.files), escape("; ".join(r.notes)))
        Console(soft_wrap=True).print(table)
        if not all(r.verified for r in rows):
            raise typer.Exit(1)

    @app.command()
    def export(
        run_dir: RunDirArg,
        output: Annotated[Path, typer.Option("--output", "-o", help="the probe file to write (.safetensors)")],
    ) -> None:
        """Write the run's probe and its scoring settings into one safetensors file for --probe.

        The file holds the neurons, weights, intercept, scaler, model fingerprint, layer sizes,
        prompt format and suffix, span method and max_new_tokens: data only, no model path, no code
        and no endpoint.
        """
        from hneurons.apply.portable import export_probe

        path = export_probe(run_dir, output)
        console.print(f"wrote {escape(str(path))}: use it with `hneurons score --probe {escape(str(path))} "
                      "--model MODEL --input FILE`", highlight=False, soft_wrap=True)


__all__ = ["MAX_INPUT_BYTES", "MaxInputOpt", "OfflineOpt", "ProbeOpt", "SetOpt", "TrustCodeOpt", "UseOptions",
           "check_questions", "register"]
