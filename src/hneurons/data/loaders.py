"""Dataset loaders: one function per file format, each reading through :mod:`hneurons.data.readers`.

A malformed row raises :class:`~hneurons.errors.DataError` naming ``FILE:LINE: field '...'``
(the readers' wording), so a bad benchmark file reads like a bad ``score`` input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hneurons.data.readers import iter_rows, where
from hneurons.data.record import Record
from hneurons.errors import DataError

log = logging.getLogger("hneurons.data")


def get_field(row: Mapping[str, Any], dotted: str, path: Path, line: int, types: type | tuple[type, ...] = str,
              required: bool = True) -> Any:
    """Fetch ``a.b.c`` from ``row``; missing or mistyped → DataError naming file, line and field."""
    cur: Any = row
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur or cur[part] is None:
            if not required:
                return None
            raise DataError(f"{where(path, line, dotted)} is missing")
        cur = cur[part]
    if not isinstance(cur, types):
        names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise DataError(f"{where(path, line, dotted)} should be {names}, got {type(cur).__name__}")
    if isinstance(cur, str) and required and not cur.strip():
        raise DataError(f"{where(path, line, dotted)} is empty")
    return cur


def _str_list(row: Mapping[str, Any], dotted: str, path: Path, line: int, required: bool = True) -> list[str]:
    value = get_field(row, dotted, path, line, (list, tuple), required=required)
    if value is None:
        return []
    out = []
    for j, v in enumerate(value):
        if not isinstance(v, str):
            raise DataError(f"{where(path, line, f'{dotted}[{j}]')} should be str, got {type(v).__name__}")
        out.append(v)
    return out


def _dedupe_keep_order(items: Sequence[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    return tuple(x for x in items if x.strip() and not (x in seen or seen.add(x)))


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------


def load_triviaqa(path: Path) -> list[Record]:
    """TriviaQA: the packaged DPR format (id, question, answers) or the original rc.nocontext.

    rc.nocontext rows (HF parquet or json/jsonl) carry ``question_id``, ``question`` and
    ``answer.aliases`` / ``answer.normalized_aliases``; both alias lists are merged and
    de-duplicated, as the official code does (the paper, arXiv 2512.01797, §6.1.1).
    """
    out = []
    for line, row in iter_rows(path, what="data file"):
        if "answer" in row and isinstance(row["answer"], Mapping):
            rid = get_field(row, "question_id", path, line)
            aliases = _str_list(row, "answer.aliases", path, line)
            aliases += _str_list(row, "answer.normalized_aliases", path, line, required=False)
            extra = {"value": row["answer"].get("value")} if row["answer"].get("value") else {}
        else:
            rid = get_field(row, "id", path, line)
            aliases = _str_list(row, "answers", path, line)
            extra = {}
        question = get_field(row, "question", path, line)
        answers = _dedupe_keep_order(aliases)
        if not answers:
            raise DataError(f"{path}:{line}: field 'answers' has no non-empty alias")
        out.append(Record(id=str(rid), question=question.strip(), answers=answers, extra=extra))
    return out


def load_qa(path: Path) -> list[Record]:
    """Generic alias-judged QA rows: ``id``, ``question``, ``answers`` (NQ-Open, BioASQ)."""
    out = []
    for line, row in iter_rows(path, what="data file"):
        answers = _dedupe_keep_order(_str_list(row, "answers", path, line))
        if not answers:
            raise DataError(f"{path}:{line}: field 'answers' has no non-empty answer")
        extra = {k: row[k] for k in ("ideal_answer", "split") if k in row}
        out.append(Record(id=str(get_field(row, "id", path, line)),
                          question=get_field(row, "question", path, line).strip(), answers=answers, extra=extra))
    return out


def load_falseqa(path: Path) -> list[Record]:
    """FalseQA rows; ``label`` 1 = false premise, reference rebuttals in ``extra['references']``."""
    out = []
    for line, row in iter_rows(path, what="data file"):
        label = get_field(row, "label", path, line, int)
        if label not in (0, 1):
            raise DataError(f"{path}:{line}: field 'label' must be 0 or 1, got {label}")
        refs = _str_list(row, "answers", path, line, required=False) or [get_field(row, "answer", path, line)]
        out.append(Record(id=str(get_field(row, "id", path, line)), question=get_field(row, "question", path, line).strip(),
                          label=label, extra={"references": refs, "split": row.get("split")}))
    return out


def simple_loader(text_field: str, extra_fields: Mapping[str, str]) -> Callable[[Path], list[Record]]:
    """Loader for prompt-only sets: question from ``text_field``, selected fields into ``extra``."""

    def load(path: Path) -> list[Record]:
        out = []
        for line, row in iter_rows(path, what="data file"):
            extra = {new: row.get(old) for new, old in extra_fields.items()}
            out.append(Record(id=str(get_field(row, "id", path, line)),
                              question=get_field(row, text_field, path, line).strip(), extra=extra))
        return out

    load.__doc__ = f"Rows with ``id`` and ``{text_field}``; keeps {sorted(extra_fields)} in ``extra``."
    return load


def load_faitheval(path: Path) -> list[Record]:
    """FaithEval counterfactual subset (user-supplied JSON Lines/parquet; FORMAT.md in the data folder).

    Validates per FORMAT.md: unique ids, ``choices.label``/``choices.text`` of equal length 3-5,
    ``answerKey`` among the labels. ``answerKey`` is the context-supported (counterfactual)
    option, so ``answers`` holds its text; the real-world answer is not in the data
    (``extra['gold_label']`` is None), matching :func:`~hneurons.data.constructed.build_counterfactual_mc`.
    """
    out, seen = [], set()
    for line, row in iter_rows(path, what="data file"):
        rid = str(get_field(row, "id", path, line))
        if rid in seen:
            raise DataError(f"{path}:{line}: field 'id' repeats {rid!r}; ids must be unique")
        seen.add(rid)
        labels = _str_list(row, "choices.label", path, line)
        texts = _str_list(row, "choices.text", path, line)
        if len(labels) != len(texts):
            raise DataError(f"{path}:{line}: field 'choices' has {len(labels)} labels but {len(texts)} texts")
        if not 3 <= len(labels) <= 5:
            raise DataError(f"{path}:{line}: field 'choices' has {len(labels)} options; expected 3 to 5")
        key = get_field(row, "answerKey", path, line)
        if key not in labels:
            raise DataError(f"{path}:{line}: field 'answerKey' {key!r} is not one of choices.label {labels}")
        out.append(Record(
            id=rid, question=get_field(row, "question", path, line).strip(), answers=(texts[labels.index(key)],),
            extra={"context": get_field(row, "context", path, line),
                   "choices": {"label": labels, "text": texts}, "answerKey": key, "gold_label": None},
        ))
    if len(out) != 1000:
        log.warning("FaithEval file %s has %d rows; the counterfactual subset has 1,000", path, len(out))
    return out


def load_are_you_sure(path: Path) -> list[Record]:
    """Sharma et al.'s ``are_you_sure.jsonl`` (user-supplied): free-form trivia_qa/truthful_qa items.

    Multiple-choice sub-datasets are skipped (the project's sycophancy protocol is free-form).
    """
    out = []
    for line, row in iter_rows(path, what="data file"):
        base = get_field(row, "base", path, line, Mapping)
        dataset = get_field(row, "base.dataset", path, line)
        if dataset not in ("trivia_qa", "truthful_qa"):
            continue
        answers = base.get("answer")
        answers = [answers] if isinstance(answers, str) else list(answers or [])
        if base.get("correct_answer"):
            answers.append(base["correct_answer"])
        out.append(Record(
            id=str(row.get("id") or f"ays-{line:05d}"), question=get_field(row, "base.question", path, line).strip(),
            answers=_dedupe_keep_order([a for a in answers if isinstance(a, str)]),
            extra={"dataset": dataset, "correct_answer": base.get("correct_answer"),
                   "incorrect_answer": base.get("incorrect_answer")},
        ))
    return out


def _judged_label(row: dict[str, Any], path: Path, line: int, positive: str, negative: str) -> int:
    """A development file's GPT-4o ``label`` as 1 (``positive``) / 0, or one line naming the row."""
    verdict = get_field(row, "label", path, line)
    if verdict not in (positive, negative):
        raise DataError(f"{path}:{line}: field 'label' must be '{positive}' or '{negative}'")
    return int(verdict == positive)


def load_judge_validation_triviaqa(path: Path) -> list[Record]:
    """GPT-4o-judged TriviaQA responses; ``label`` 1 = GPT-4o said correct."""
    out = []
    for line, row in iter_rows(path, what="data file"):
        label = _judged_label(row, path, line, "correct", "hallucinated")
        out.append(Record(
            id=str(get_field(row, "id", path, line)), question=get_field(row, "question", path, line),
            answers=_dedupe_keep_order(_str_list(row, "answers", path, line)), label=label,
            extra={"response": get_field(row, "response", path, line, str, required=False) or "",
                   "model": row.get("model"), "answer_tokens": row.get("answer_tokens"),
                   "question_id": row.get("question_id")},
        ))
    return out


def load_judge_validation_falseqa(path: Path) -> list[Record]:
    """GPT-4o-judged FalseQA responses; ``label`` 1 = ACCEPTED (complied with the false premise)."""
    out = []
    for line, row in iter_rows(path, what="data file"):
        label = _judged_label(row, path, line, "ACCEPTED", "REFUSED")
        out.append(Record(
            id=str(get_field(row, "id", path, line)), question=get_field(row, "question", path, line),
            label=label,
            extra={"response": get_field(row, "response", path, line, str, required=False) or "",
                   "alpha": row.get("alpha"), "question_id": row.get("question_id")},
        ))
    return out
