"""The ``hneurons judge`` command (a thin layer over :func:`hneurons.judges.files.judge_file`).

Exit status: 0 when every row was judged; 2 when any row was bad (each reported on stderr as
``FILE:LINE: message``; the other rows are still judged and written) or on a user error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from hneurons.cli.help import JUDGE_TASKS, choices

console = Console(stderr=True)


def _default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hneurons" / "llm_judge"


def register(app: typer.Typer) -> None:
    """Add ``judge`` to ``app``."""

    @app.command()
    def judge(
        task: Annotated[str, typer.Argument(metavar="TASK", help=(
            f"{escape(choices(JUDGE_TASKS))}: triviaqa = any QA with aliases, mc = multiple choice"))],
        input: Annotated[Optional[Path], typer.Option("--input", "-i", help=".jsonl with question, response (+ answers / choices)")] = None,
        output: Annotated[Optional[Path], typer.Option("--output", "-o", help="write judged rows here (default: stdout)")] = None,
        judge_kind: Annotated[str, typer.Option("--judge", metavar=choices(("rule", "llm")),
                                                help="rule: offline judges; llm: offline judge as fallback")] = "rule",
        judge_url: Annotated[Optional[str], typer.Option("--judge-url", help="OpenAI-compatible server for --judge llm")] = None,
        judge_model: Annotated[Optional[str], typer.Option("--judge-model", help="model name on that server")] = None,
        judge_api_key: Annotated[Optional[str], typer.Option("--judge-api-key", envvar="HNEURONS_JUDGE_API_KEY",
                                                             help="API key (or env HNEURONS_JUDGE_API_KEY)")] = None,
        cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="LLM verdict cache (default ~/.cache/hneurons/llm_judge)")] = None,
        eval_file: Annotated[Optional[Path], typer.Option("--eval", help="labelled .jsonl(.gz) (+ 'label'): print agreement, CI, confusion matrix")] = None,
        by: Annotated[Optional[str], typer.Option("--by", metavar="FIELD", help="with --eval: agreement per value of this field too (e.g. method, alpha, model)")] = None,
    ) -> None:
        """Judge responses: add 'verdict' and 'judge' to every row (see README, "hneurons judge")."""
        from hneurons.data.readers import check_input_path, check_output_path
        from hneurons.errors import ConfigError
        from hneurons.judges.files import judge_file, make_judge

        if (input is None) == (eval_file is None):
            raise ConfigError("hneurons judge needs exactly one of --input FILE (judge it) or --eval FILE (validate the judge)")
        if by is not None and eval_file is None:
            raise ConfigError("--by FIELD splits an --eval measurement; add --eval FILE, or drop --by")
        check_input_path(input if input is not None else eval_file)
        if output is not None:
            check_output_path(output)  # before a judge (or an LLM endpoint) is set up
        j = make_judge(judge_kind, judge_url, judge_model, judge_api_key,
                       (cache_dir or _default_cache()) if judge_kind == "llm" else None)
        if eval_file is not None:
            _evaluate(task, eval_file, j, output, by)
            return
        try:
            if output is None:
                res = judge_file(task, input, sys.stdout, j)
            else:
                output.parent.mkdir(parents=True, exist_ok=True)
                with output.open("w", encoding="utf-8") as fh:
                    res = judge_file(task, input, fh, j)
        finally:
            if j.llm is not None:
                j.llm.close()
        for line, message in res.bad:
            console.print(f"{escape(str(input))}:{line}: {escape(message)}", highlight=False, soft_wrap=True)
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(res.verdicts.items()))
        judges = ", ".join(f"{k} {v}" for k, v in sorted(res.sources.items()))
        console.print(f"judged {res.judged} row(s) ({verdicts or 'none'}; by {judges or '-'})"
                      + (f"; {len(res.bad)} bad row(s) skipped" if res.bad else ""), highlight=False, soft_wrap=True)
        if res.bad:
            raise typer.Exit(2)


def _evaluate(task: str, path: Path, j: object, output: Optional[Path], by: Optional[str]) -> None:
    """``--eval``: the judge's agreement with the file's labels on stdout (JSON with -o), bad rows on stderr."""
    import json

    from hneurons.judges.evaluate import judge_labelled

    try:
        judged = judge_labelled(task, path, j)  # type: ignore[arg-type]
    finally:
        if getattr(j, "llm", None) is not None:
            j.llm.close()  # type: ignore[attr-defined]
    groups = judged.by(by) if by is not None else {}
    for line, message in judged.bad:
        console.print(f"{escape(str(path))}:{line}: {escape(message)}", highlight=False, soft_wrap=True)
    d = {"task": task, "file": str(path), "judge": getattr(j, "name", "rule"), **judged.overall().to_dict()}
    c = d["confusion"]
    print(f"{task}: {_headline(d)}"
          f"\n            reference +  reference -\njudge +  {c['tp']:>12} {c['fp']:>12}\njudge -  {c['fn']:>12} {c['tn']:>12}")
    if groups:
        d["by"] = {"field": by, "groups": {k: a.to_dict() for k, a in groups.items()}}
        print(f"by {by}:")
        for key, g in d["by"]["groups"].items():
            print(f"  {key}: {_headline(g)} (fp {g['confusion']['fp']}, fn {g['confusion']['fn']})")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(d, indent=1) + "\n", encoding="utf-8")
    if judged.bad:
        raise typer.Exit(2)


def _headline(d: dict) -> str:
    """``agree/n agree = p% [95% CI lo, hi]`` of an agreement's :meth:`to_dict`."""
    lo, hi = d["ci95"]
    return f"{d['agree']}/{d['n']} agree = {100 * d['agreement']:.1f}% [95% CI {100 * lo:.1f}, {100 * hi:.1f}]"
