"""Input rows (``score``, ``judge``, ``judge --eval``) are checked by one pydantic model per row kind,
and a bad row is one ``FILE:LINE: field 'x' must be ...`` line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from hneurons.apply.score import read_items
from hneurons.data.rows import JUDGE_ROWS, ScoreRow, problem
from hneurons.errors import DataError
from hneurons.judges.evaluate import LabelRow, evaluate_file
from hneurons.judges.files import judge_file


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_every_row_field_says_what_it_must_be() -> None:
    for model in (ScoreRow, LabelRow, *JUDGE_ROWS.values()):
        for name, info in model.model_fields.items():
            assert info.description and "\n" not in info.description, (model.__name__, name)


@pytest.mark.parametrize("rows, where, words", [
    ([{"question": "Q?"}, {"id": "x", "answer": "a"}], 2, "field 'question' must be a non-empty string"),
    ([{"question": 7}], 1, "field 'question' must be a non-empty string"),
    ([{"question": "Q?", "answer": ["a"]}], 1, "field 'answer' must be a non-empty string (leave the field out"),
])
def test_score_rows_name_file_line_and_field(tmp_path, rows, where, words) -> None:
    p = _jsonl(tmp_path / "in.jsonl", rows)
    with pytest.raises(DataError) as err:
        read_items(p)
    assert str(err.value).startswith(f"{p}:{where}: {words}")


def test_score_rows_pass_their_other_fields_and_keep_ids(tmp_path) -> None:
    p = _jsonl(tmp_path / "in.jsonl", [{"question": "Q?", "answer": None, "extra": 1}, {"id": 5, "question": "R?"}])
    assert read_items(p) == [{"id": "1", "question": "Q?"}, {"id": "5", "question": "R?"}]


@pytest.mark.parametrize("task, row, field", [
    ("falseqa", {"question": "Q?"}, "response"),
    ("jailbreak", {"response": "r"}, "question"),
    ("triviaqa", {"question": "Q?", "response": "r"}, "answers"),
    ("triviaqa", {"question": "Q?", "response": "r", "answers": ["a", 1]}, "answers"),
    ("mc", {"question": "Q?", "response": "A"}, "choices"),
    ("mc", {"question": "Q?", "response": "A", "choices": [f"o{i}" for i in range(27)]}, "choices"),
])
def test_judge_rows_missing_or_mistyped_fields_are_listed_by_line(tmp_path, task, row, field) -> None:
    good = {"question": "Q?", "response": "A", "answers": ["a"], "choices": ["x", "y"]}
    p = _jsonl(tmp_path / "in.jsonl", [good, row])
    res = judge_file(task, p, io.StringIO())
    assert res.judged == 1 and len(res.bad) == 1
    line, message = res.bad[0]
    assert line == 2 and message.startswith(f"field '{field}' must be "), message
    assert message == problem(JUDGE_ROWS[task], row)


def test_labelled_rows_need_a_known_label(tmp_path) -> None:
    row = {"question": "Why is the sky green?", "response": "It is not green."}
    p = _jsonl(tmp_path / "lab.jsonl", [{**row, "label": "REFUSED"}, row, {**row, "label": "maybe"}])
    agreement, bad = evaluate_file("falseqa", p)
    assert agreement.n == 1 and [line for line, _ in bad] == [2, 3]
    assert all(m.startswith("field 'label' must be one of ['0', '1', 'accepted'") for _, m in bad)
