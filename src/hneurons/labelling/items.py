"""Judge → answer span → feature item: once, for every stage that turns answers into features.

:class:`SpanRule` fixes how a question and a response become a token sequence (the chat prompt
with the paper's suffix, or the base model's plain ``question`` turn) and which rule picks the
answer tokens (``spans.method``); :func:`locate` applies it to one response and
:func:`judge_and_locate` judges and locates a whole evaluation set. The rows they produce are
the ``items_<set>.parquet`` tables of the detect and origin stages (:func:`write_items`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hneurons.core.features import FeatureItem
from hneurons.data.registry import Record
from hneurons.errors import DataError
from hneurons.labelling.verdicts import LLMVerdict, judge_response
from hneurons.text.locator import span_by_config
from hneurons.text.prompts import user_text
from hneurons.text.spans import Sequence as TokenSequence
from hneurons.text.spans import Span, SpanFailure, build_sequence, locate_answer, whole_response_span

ITEM_COLUMNS = ["qid", "question", "response", "verdict", "label", "span_start", "span_end", "span_text",
                "span_status"]


@dataclass(frozen=True)
class SpanRule:
    """How one stage builds sequences and finds answer spans.

    ``suffix`` ``None`` is the base model's plain prompt (the question alone, as the paper (arXiv 2512.01797) §7.1 prompts base models);
    otherwise the user turn is :func:`hneurons.text.prompts.user_text` with that suffix.
    ``locator`` is the LLM span locator when ``method == "llm"``.
    """

    tokenizer: Any
    chat: bool
    method: str
    suffix: str | None
    locator: Any = None

    def user(self, question: str) -> str:
        return question.strip() if self.suffix is None else user_text(question, self.suffix)


@dataclass(frozen=True)
class Located:
    """A response placed in its token sequence, with its answer span (or why there is none)."""

    sequence: TokenSequence
    span: Span | SpanFailure
    feature: FeatureItem | None


def locate(rule: SpanRule, qid: str, question: str, response: str, answer: str | None,
           refusal_is_answer: bool = False) -> Located:
    """The answer span of one response and, when found, its :class:`FeatureItem`.

    ``answer`` is read only by the label-aware parity rule (``method = "alias"``). On a set where
    a refusal is the faithful answer (NonExist, ``refusal_is_answer``) that rule locates the refusal
    phrase, else the whole response; every other rule is label-blind.
    """
    seq = build_sequence(rule.tokenizer, rule.user(question), response, chat=rule.chat)
    if rule.method == "alias" and refusal_is_answer:
        span = locate_answer(seq, answer) if answer else SpanFailure("no phrase")
        if isinstance(span, SpanFailure):
            span = whole_response_span(seq)
    else:
        span = span_by_config(seq, question, rule.method, rule.locator, answer)
    feature = None
    if isinstance(span, Span):
        feature = FeatureItem(qid, tuple(seq.input_ids), (span.start, span.end), (seq.prompt_end, seq.response_end))
    return Located(seq, span, feature)


@dataclass
class JudgedItem:
    """One judged answer of an evaluation set and, when located, its answer span (token range)."""

    qid: str
    question: str
    response: str
    verdict: str
    label: int | None  # 1 = hallucinated, 0 = faithful, None = dropped (refusal / no answer / judge error)
    span_start: int = -1
    span_end: int = -1
    span_text: str = ""
    span_status: str = "dropped"
    feature: FeatureItem | None = None

    def row(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in ITEM_COLUMNS}


def judge_and_locate(rule: SpanRule, eval_set: Any, records: Sequence[Record], responses: Sequence[str],
                     refusal_phrases: Sequence[str], llm_verdict: LLMVerdict | None = None) -> list[JudgedItem]:
    """Judge every response (:func:`~hneurons.labelling.verdicts.judge_response`) and locate the
    answer span of each labelled one; dropped and unlocated items keep ``feature=None`` and say why
    in ``span_status``."""
    if len(records) != len(responses):
        raise DataError(f"{len(records)} questions but {len(responses)} responses; they must be aligned")
    out = []
    for rec, text in zip(records, responses):
        v = judge_response(eval_set, rec.question, text, rec.answers, refusal_phrases, llm_verdict)
        item = JudgedItem(rec.id, rec.question, text, v.verdict, v.label)
        if v.label is not None:
            loc = locate(rule, rec.id, rec.question, text, v.answer, eval_set.refusals == "faithful")
            if isinstance(loc.span, SpanFailure):
                item.span_status = loc.span.reason
            else:
                item.span_start, item.span_end, item.span_text = loc.span.start, loc.span.end, loc.span.text
                item.span_status, item.feature = "ok", loc.feature
        out.append(item)
    return out


def labelled_feature_items(tokenizer: Any, chat: bool, rows: Sequence[dict[str, Any]]) -> list[FeatureItem]:
    """The feature items of ``responses/labelled.parquet`` rows, rebuilt as the features stage built
    them (the row's prompt and response, its stored answer span)."""
    items = []
    for row in rows:
        seq = build_sequence(tokenizer, row["prompt"], row["response"], chat=chat)
        items.append(FeatureItem(str(row["qid"]), tuple(seq.input_ids), (int(row["span_start"]), int(row["span_end"])),
                                 (seq.prompt_end, seq.response_end)))
    return items


def write_items(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """Atomically write item rows as parquet, one column per name (missing values → null)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hneurons.rundir import atomic_path

    table = pa.table({c: [r.get(c) for r in rows] for c in columns})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
