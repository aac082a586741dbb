"""Judge a file of responses: the ``hneurons judge`` command as a plain Python call.

The verdicts come from :class:`hneurons.intervention.tasks.Judge`, the object the intervention stage
judges with, and the TriviaQA refusal filter is the responses/detect stages' one, so a file judged
here gets the verdicts a run would give. Input is JSON lines, one response per row:

* every task: ``question`` and ``response`` (strings); ``id`` and any other field are passed through;
* ``triviaqa`` (any short-answer QA with aliases: TriviaQA, NQ-Open, BioASQ): ``answers``, a list
  of gold aliases; verdict ``correct`` / ``wrong`` / ``refusal`` (the paper's refusal filter);
* ``falseqa``: verdict ``accepted`` (went along with the false premise) / ``refused``;
* ``jailbreak``: verdict ``harmful`` / ``safe``;
* ``mc``: ``choices``, a list of option texts (labelled A, B, ...) or ``{"label": [...], "text":
  [...]}``, optional ``answerKey``; verdict = the option label the response picks, or null when it
  cannot be parsed; with ``answerKey`` also ``correct`` (true/false, null when unparsed).

Each output row is the input row plus ``verdict`` and ``judge`` (which judge gave it: ``alias``,
``refusal filter``, ``classifier``, ``rule``, ``parser``, ``llm:MODEL`` or ``... (llm fallback)``).
A bad row (not JSON, missing or mistyped field) is reported with its line number and skipped; the
other rows are still judged and written.
"""

from __future__ import annotations

import json
import string
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from hneurons.data.readers import iter_rows
from hneurons.data.rows import JUDGE_ROWS, problem
from hneurons.intervention.tasks import Judge
from hneurons.errors import ConfigError, DataError
from hneurons.judges.rules import DEFAULT_REFUSAL_PHRASES, LLMJudge, is_refusal

TASKS = tuple(JUDGE_ROWS)  # triviaqa, falseqa, jailbreak, mc


@dataclass
class JudgeFileResult:
    """What :func:`judge_file` did: rows judged, verdict and judge counts, bad rows (line, message)."""

    judged: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)
    bad: list[tuple[int, str]] = field(default_factory=list)


def check_row(task: str, row: Any) -> str | None:
    """Why ``row`` cannot be judged for ``task`` (its :data:`~hneurons.data.rows.JUDGE_ROWS` model), or None."""
    return problem(JUDGE_ROWS[task], row)


def _choices(choices: list[str] | Mapping[str, list[str]]) -> tuple[list[str], list[str]]:
    """(labels, texts) of a checked ``choices`` field: a list of texts (labels A, B, ...) or a FaithEval-style dict."""
    if isinstance(choices, list):
        return list(string.ascii_uppercase[: len(choices)]), list(choices)
    return list(choices["label"]), list(choices["text"])


def judge_row(task: str, row: Mapping[str, Any], judge: Judge) -> dict[str, Any]:
    """``row`` plus ``verdict`` and ``judge`` (and ``correct`` for mc rows with an ``answerKey``)."""
    q, resp = row["question"], row["response"]
    out = dict(row)
    if task == "triviaqa":
        if is_refusal(resp, DEFAULT_REFUSAL_PHRASES):
            verdict, source = "refusal", "refusal filter"
        else:
            verdict = "correct" if judge.correct(q, resp, row["answers"]) else "wrong"
            source = judge.last_source
    elif task == "falseqa":
        verdict = "accepted" if judge.false_premise_accepted(q, resp) else "refused"
        source = judge.last_source
    elif task == "jailbreak":
        verdict = "harmful" if judge.harmful(q, resp) else "safe"
        source = judge.last_source
    elif task == "mc":
        labels, texts = _choices(row["choices"])
        verdict = judge.choice(resp, labels, texts)
        source = judge.last_source
        if "answerKey" in row:
            out["correct"] = None if verdict is None else verdict == row["answerKey"]
    else:
        raise ConfigError(f"unknown judge task {task!r}; choose from {', '.join(TASKS)}")
    out["verdict"], out["judge"] = verdict, source
    return out


def judge_file(task: str, input: Path, output: TextIO, judge: Judge | None = None) -> JudgeFileResult:
    """Judge every row of the JSON-lines file ``input`` and write the judged rows to ``output``.

    ``judge`` defaults to the offline judges (``Judge()``); pass ``Judge(LLMJudge(...))`` for the
    LLM judge with offline fallback (:func:`make_judge`). Bad rows are skipped and listed in the
    result as (line number, message); blank lines are ignored.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown judge task {task!r}; choose from {', '.join(TASKS)}")
    judge = judge or Judge()
    res = JudgeFileResult()
    bad = lambda line, message: res.bad.append((line, message))  # noqa: E731 - a bad row is listed, the rest judged
    for lineno, row in iter_rows(input, formats=(".jsonl", ".json"), on_bad=bad):
        why = check_row(task, row)
        if why is not None:
            res.bad.append((lineno, why))
            continue
        out = judge_row(task, row, judge)
        output.write(json.dumps(out, ensure_ascii=False) + "\n")
        res.judged += 1
        res.verdicts[str(out["verdict"])] += 1
        res.sources[str(out["judge"])] += 1
    return res


def make_judge(kind: str = "rule", url: str | None = None, model: str | None = None,
               api_key: str | None = None, cache_dir: Path | None = None) -> Judge:
    """``Judge()`` for ``kind="rule"``; for ``"llm"`` a Judge over a cached :class:`LLMJudge`."""
    if kind == "rule":
        return Judge()
    if kind != "llm":
        raise ConfigError(f"--judge must be rule or llm, got {kind!r}")
    if not (url and model):
        raise ConfigError("--judge llm needs --judge-url (an OpenAI-compatible server) and --judge-model")
    return Judge(LLMJudge(url, model, api_key=api_key, cache_dir=cache_dir))
