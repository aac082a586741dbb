"""The rows a user gives ``score`` and ``judge``: one pydantic model per row kind, one error wording.

Why models: a row kind's fields, their types and what each means are declared once, and the check
of a row is the model's validation, so ``hneurons score``, ``score()``, ``hneurons judge`` and
``judge --eval`` refuse a bad row with the same words. :func:`problem` turns the first thing
pydantic finds into ``field 'x' must be DESCRIPTION`` (the field's description says what it
must be); the readers put ``FILE:LINE:`` in front (:func:`hneurons.data.readers.where`). The
models only check: a row is used as it was given, so fields they do not name (``id``,
``answerKey``, a user's own columns) pass through untouched.
"""

from __future__ import annotations

import string
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator


class _Row(BaseModel):
    """Strict (no number read as text, no text as a list) and open to fields a row kind does not name."""

    model_config = ConfigDict(strict=True, extra="allow")


class ScoreRow(_Row):
    """One item of ``hneurons score`` / :func:`hneurons.apply.score.score`: a question and maybe its answer."""

    question: StrictStr = Field(min_length=1, pattern=r"\S", description="a non-empty string")
    answer: StrictStr | None = Field(None, min_length=1, pattern=r"\S",
                                     description="a non-empty string (leave the field out to have the answer "
                                                 "generated)")
    id: Any = Field(None, description="the item's name in the output (default: its line number)")


class JudgeRow(_Row):
    """A response to judge (``falseqa``, ``jailbreak``): the question and the model's response."""

    question: StrictStr = Field(description="a string")
    response: StrictStr = Field(description="a string")


class QARow(JudgeRow):
    """A short-answer response (``triviaqa``: TriviaQA, NQ-Open, BioASQ) with its gold aliases."""

    answers: list[StrictStr] = Field(min_length=1, description="a non-empty list of alias strings")


class LabelledChoices(BaseModel):
    """FaithEval-style options: ``{"label": [...], "text": [...]}`` of equal length."""

    model_config = ConfigDict(strict=True, extra="ignore")
    label: list[StrictStr] = Field(min_length=1)
    text: list[StrictStr]

    @model_validator(mode="after")
    def _same_length(self) -> LabelledChoices:
        if len(self.label) != len(self.text):
            raise ValueError("label and text differ in length")
        return self


class MCRow(JudgeRow):
    """A multiple-choice response: the options (labelled A, B, ... when given as a list)."""

    choices: Annotated[list[StrictStr], Field(min_length=1, max_length=len(string.ascii_uppercase))] | LabelledChoices \
        = Field(description="a non-empty list of strings or {'label': [...], 'text': [...]} of equal length")


JUDGE_ROWS: dict[str, type[_Row]] = {"triviaqa": QARow, "falseqa": JudgeRow, "jailbreak": JudgeRow, "mc": MCRow}


def problem(model: type[BaseModel], row: Any) -> str | None:
    """Why ``row`` is not a ``model`` row, as ``field 'x' must be ...`` (the first bad field), or None."""
    if not isinstance(row, dict):
        return "a row must be a JSON object"
    try:
        model.model_validate(row)
    except ValidationError as exc:
        name = str(exc.errors()[0]["loc"][0])  # every rule of the row models is a field's own
        return f"field {name!r} must be {model.model_fields[name].description}"
    return None
