"""CLI commands that use a fitted run on new text: ``score``, ``generate``, ``serve``.

Registered on the main app by :func:`register`; user errors surface as
:class:`~hneurons.errors.HNeuronsError` and are printed as one line by ``hneurons.cli.main.main``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from hneurons.cli.help import ON_LONG, choices
from hneurons.cli.trust import (MAX_INPUT_BYTES, MaxInputOpt, OfflineOpt, ProbeOpt, SetOpt, TrustCodeOpt, UseOptions,
                                check_questions)

console = Console(stderr=True)

RunDirArg = Annotated[Optional[Path], typer.Argument(help="run directory with a fitted probe (e.g. runs/default; "
                                                          "omit it with --probe)", show_default=False)]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="the model to load, never taken from the run "
                                                                "(default: $HNEURONS_MODEL or the embedded model); its fingerprint must match the probe's")]
ForceOpt = Annotated[bool, typer.Option("--force", help="use the model even if its fingerprint differs from the run's")]
AlphaOpt = Annotated[float, typer.Option("--alpha", help="scale the H-Neurons by this factor while generating (1 = off)")]
AbstainOpt = Annotated[Optional[float], typer.Option("--abstain-above", help="abstain when p_hallucination exceeds this")]


@dataclasses.dataclass(frozen=True)
class CommonOptions:
    """The options score, generate and serve all end with, declared once so that the three cannot drift apart.

    :func:`with_common_options` adds them to a command; the command gets them as one ``common`` argument.
    """

    probe: ProbeOpt = None
    sets: SetOpt = None
    trust_remote_code: TrustCodeOpt = False
    offline: OfflineOpt = False
    max_input_bytes: MaxInputOpt = MAX_INPUT_BYTES

    def use(self, run_dir: Optional[Path], model: Optional[str], force: bool) -> UseOptions:
        """Where the probe and model come from, with the command's own ``run_dir``, ``model`` and ``force``."""
        return UseOptions(run_dir, self.probe, model, force, self.sets, self.trust_remote_code, self.offline)


def with_common_options(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` with :class:`CommonOptions`' fields appended to its signature, where typer reads its options.

    ``command`` takes ``common: CommonOptions`` in their place; the fields come last, in their order, in ``--help``.
    """
    fields = dataclasses.fields(CommonOptions)
    hints = typing.get_type_hints(CommonOptions, include_extras=True)
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "common"]
    common = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[f.name])
              for f in fields]

    @functools.wraps(command)
    def with_options(**kwargs: typing.Any) -> None:
        common = CommonOptions(**{f.name: kwargs.pop(f.name) for f in fields})
        command(**kwargs, common=common)

    with_options.__signature__ = inspect.Signature(own + common)  # type: ignore[attr-defined]
    return with_options


def score(
    input: Annotated[Path, typer.Option("--input", "-i", help=".jsonl or .csv with 'question', optional 'answer' and 'id'")],
    run_dir: RunDirArg = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="jsonl to append results to (resumable)")] = Path("scores.jsonl"),
    model: ModelOpt = None,
    force: ForceOpt = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    on_long: Annotated[str, typer.Option("--on-long", metavar=choices(ON_LONG),
                                         help="what to do with inputs longer than the model's context")] = "truncate",
    *,
    common: CommonOptions,
) -> None:
    """Score (question, answer) pairs with the run's probe; missing answers are generated first."""
    from hneurons.errors import DataError
    from hneurons.apply.score import read_items, score_file
    from hneurons.trust import check_input_lines

    use = common.use(run_dir, model, force)
    use.source()
    check_input_lines(input, common.max_input_bytes)  # before anything is parsed or tokenized
    if not read_items(input):  # report input errors before loading the model
        raise DataError(f"{input} has no items; give one JSON object per line (or CSV row) with a 'question'")
    stats = score_file(use.state(), input, output, batch_size=batch_size, on_long=on_long)
    console.print(f"scored {stats['scored']} item(s), skipped {stats['skipped']} already in {output}")


def generate(
    run_dir: Annotated[Optional[str], typer.Argument(help="run directory (omit it with --probe)", show_default=False)] = None,
    questions: Annotated[Optional[list[str]], typer.Argument(help="one or more questions", show_default=False)] = None,
    alpha: AlphaOpt = 1.0,
    abstain_above: AbstainOpt = None,
    max_new_tokens: Annotated[Optional[int], typer.Option("--max-new-tokens", min=1, help="default: the run's")] = None,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0)] = 0.0,
    model: ModelOpt = None,
    force: ForceOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object per question")] = False,
    *,
    common: CommonOptions,
) -> None:
    """Answer questions with guarded generation: H-Neurons scaled by α, each answer scored."""
    from hneurons.config import check_guard
    from hneurons.errors import DataError
    from hneurons.apply.guard import guarded_generate

    use = common.use(None, model, force)
    questions = use.questions(run_dir, questions)
    check_guard(alpha, abstain_above)  # before the model loads
    for i, q in enumerate(questions):
        if not q.strip():
            raise DataError(f"question {i + 1} is empty; every question needs text")
    check_questions(questions, common.max_input_bytes)
    results = guarded_generate(use.state(), questions, alpha=alpha, abstain_above=abstain_above,
                               max_new_tokens=max_new_tokens, temperature=temperature)
    if as_json:
        for r in results:
            typer.echo(json.dumps(r, ensure_ascii=False))
        return
    table = Table(title=f"guarded generation (α = {alpha:g})")
    for col in ("question", "answer", "p_hallucination", "top neuron"):
        table.add_column(col)
    for r in results:
        p = "-" if r["p_hallucination"] is None else f"{r['p_hallucination']:.3f}"
        top = r["top_neurons"][0] if r["top_neurons"] else None
        table.add_row(r["question"], r["answer"] + (" [abstained]" if r["abstained"] else ""), p,
                      top["name"] if top else "-")
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``score`` and ``generate`` to ``app`` (``serve`` lives in :mod:`hneurons.cli.serve`)."""
    app.command()(with_common_options(score))
    app.command()(with_common_options(generate))
