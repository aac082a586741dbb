"""Validate any judge on a labelled file: agreement, Wilson interval and confusion matrix.

``hneurons judge TASK --eval FILE.jsonl`` is this module. A labelled row is a judge-file row (see
:mod:`hneurons.judges.files`) plus ``label``, the reference verdict: for ``triviaqa`` ``correct``
/ ``hallucinated`` (or ``wrong``/``incorrect``), for ``falseqa`` ``ACCEPTED`` / ``REFUSED``, for
``jailbreak`` ``HARMFUL`` / ``SAFE`` (JailbreakBench's ``goal`` is accepted for ``question``), and
true/false for any task. The positive class is the judge's positive verdict (correct, accepted,
harmful), so ``fp`` counts e.g. false "correct" verdicts.

``--by FIELD`` splits the agreement by a field of the rows (an attack, an α, a model): a judge that
agrees 90% overall can agree 75% on the one kind of response a study is about (docs/JUDGES.md
shows this for the jailbreak judge by attack).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator

from hneurons.data.readers import iter_rows
from hneurons.data.rows import problem
from hneurons.errors import ConfigError, DataError
from hneurons.intervention.tasks import Judge
from hneurons.stats import proportion_ci

POSITIVE_LABELS = {"correct", "accepted", "harmful", "true", "yes", "1"}
NEGATIVE_LABELS = {"hallucinated", "wrong", "incorrect", "refused", "safe", "false", "no", "0"}
POSITIVE_VERDICT = {"triviaqa": "correct", "falseqa": "accepted", "jailbreak": "harmful"}


@dataclass(frozen=True)
class Agreement:
    """A judge against reference labels; positive = the judge's positive verdict."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def agree(self) -> int:
        return self.tp + self.tn

    def to_dict(self) -> dict[str, Any]:
        """The judge-card fields: n, agree, agreement, ci95 (Wilson), confusion, false-positive rate."""
        p, lo, hi = proportion_ci(self.agree, self.n)
        neg = self.fp + self.tn
        return {"n": self.n, "agree": self.agree, "agreement": round(p, 4), "ci95": [round(lo, 4), round(hi, 4)],
                "confusion": {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn},
                "false_positive_rate": round(self.fp / neg, 4) if neg else None}


def agreement(pred: list[bool], ref: list[bool]) -> Agreement:
    """Count the four cells of the confusion matrix of ``pred`` against ``ref``."""
    if len(pred) != len(ref):
        raise DataError(f"agreement needs as many verdicts as labels, got {len(pred)} and {len(ref)}")
    cells = [(p, r) for p, r in zip(pred, ref)]
    return Agreement(tp=cells.count((True, True)), fp=cells.count((True, False)),
                     fn=cells.count((False, True)), tn=cells.count((False, False)))


def reference(label: Any) -> bool | None:
    """A reference label as True (positive) / False, or None when it is not one of the known words."""
    if isinstance(label, bool):
        return label
    word = str(label).strip().lower()
    return True if word in POSITIVE_LABELS else False if word in NEGATIVE_LABELS else None


class LabelRow(BaseModel):
    """The reference verdict a labelled row adds to its task's judge row."""

    label: Any = Field(description=f"one of {sorted(POSITIVE_LABELS | NEGATIVE_LABELS)} or true/false")

    @field_validator("label")
    @classmethod
    def _known(cls, value: Any) -> Any:
        if reference(value) is None:
            raise ValueError("not a known label")
        return value


def read_labelled(path: Path) -> list[tuple[int, dict[str, Any] | None, str]]:
    """(line number, row or None, why not) for every row of a labelled .jsonl / .json file (optionally .gz).

    Read through :func:`hneurons.data.readers.iter_rows` so bad files fail with the same one-line
    ``FILE:LINE`` wording as every other input; a bad row is kept as (line, None, why).
    """
    out: list[tuple[int, dict[str, Any] | None, str]] = []
    bad = lambda line, message: out.append((line, None, message))  # noqa: E731 - listed, the rest evaluated
    for lineno, row in iter_rows(path, formats=(".jsonl", ".json"), on_bad=bad, what="labelled file"):
        if isinstance(row, dict) and "question" not in row and isinstance(row.get("goal"), str):
            row["question"] = row["goal"]
        out.append((lineno, row, ""))
    return out


MISSING = "(missing)"
"""The group of the rows that lack the ``--by`` field."""


@dataclass(frozen=True)
class Judged:
    """A labelled file after judging: each valid row with its verdict and label, and the bad rows."""

    rows: list[dict[str, Any]]
    pred: list[bool]
    ref: list[bool]
    bad: list[tuple[int, str]]

    def overall(self) -> Agreement:
        return agreement(self.pred, self.ref)

    def by(self, field: str) -> dict[str, Agreement]:
        """Agreement per value of ``field`` (as text, sorted; rows without it under :data:`MISSING`).

        ConfigError when no valid row has the field, naming the fields the rows do have.
        """
        keys = [str(r[field]) if r.get(field) is not None else MISSING for r in self.rows]
        if self.rows and set(keys) == {MISSING}:
            fields = sorted({k for r in self.rows for k in r})
            raise ConfigError(f"--by {field}: no row has that field; choose one of {', '.join(fields)}")
        groups: dict[str, tuple[list[bool], list[bool]]] = {k: ([], []) for k in sorted(set(keys))}
        for key, p, r in zip(keys, self.pred, self.ref):
            groups[key][0].append(p)
            groups[key][1].append(r)
        return {k: agreement(p, r) for k, (p, r) in groups.items()}


def judge_labelled(task: str, path: Path, judge: Judge | None = None) -> Judged:
    """Judge every valid row of a labelled file; bad rows are kept as (line, message), not judged."""
    from hneurons.judges.files import check_row, judge_row

    if task not in POSITIVE_VERDICT:
        raise ConfigError(f"--eval needs a yes/no task; choose from {', '.join(POSITIVE_VERDICT)}")
    judge = judge or Judge()
    rows: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    for lineno, row, why in read_labelled(path):
        why = why or check_row(task, row) or problem(LabelRow, row)
        if why or row is None:  # (a row that is not an object always has its why)
            bad.append((lineno, why or ""))
        else:
            rows.append(row)
    pred = [judge_row(task, dict(row), judge)["verdict"] == POSITIVE_VERDICT[task] for row in rows]
    return Judged(rows=rows, pred=pred, ref=[bool(reference(row["label"])) for row in rows], bad=bad)


def evaluate_file(task: str, path: Path, judge: Judge | None = None) -> tuple[Agreement, list[tuple[int, str]]]:
    """The judge's agreement with the ``label`` of every valid row, and the bad rows (line, message)."""
    judged = judge_labelled(task, path, judge)
    return judged.overall(), judged.bad
