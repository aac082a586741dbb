"""One response → one verdict: the paper's refusal filter, then the alias or LLM judge.

A verdict carries the label the probe learns (1 = hallucinated, 0 = faithful, ``None`` = left
out) and the text the label-aware parity span rule may read. Every stage judges through
:func:`judge_response`, so a refusal, an empty answer or a judge error is treated the same way
in training, detection and the origin analysis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hneurons.errors import ConfigError
from hneurons.judges.rules import (
    BROAD_REFUSAL_PHRASES,
    DEFAULT_REFUSAL_PHRASES,
    LLMJudge,
    is_refusal,
    is_refusal_broad,
    match_alias,
)

LLMVerdict = Callable[[str, str, Sequence[str]], "bool | None"]
"""``(question, response, aliases) → correct?`` (``None``: the judge gave no valid answer)."""


@dataclass(frozen=True)
class Verdict:
    """A judged response: ``label`` 1 = hallucinated, 0 = faithful, ``None`` = dropped (refusal, no answer).

    ``answer`` is the text the parity span rule locates (the alias of a correct answer, the
    refusal phrase of a faithful refusal); ``matched_alias`` is what the alias matcher found,
    whatever the verdict (the responses stage logs it beside every sample).
    """

    verdict: str  # correct | wrong | refusal | answer | no_answer | error
    label: int | None
    answer: str | None  # text to locate as the answer span; None → the whole response
    matched_alias: str | None = None


def _fold(text: str) -> str:
    # Same length as the input (1:1 character map), so indices carry back to the original text.
    return text.lower().replace("’", "'").replace("‘", "'").replace("´", "'").replace("`", "'")


def refusal_phrase(text: str, phrases: Sequence[str] = DEFAULT_REFUSAL_PHRASES + BROAD_REFUSAL_PHRASES) -> str | None:
    """The earliest refusal/denial phrase in ``text`` as written there (longest on ties), else ``None``."""
    folded = _fold(text)
    best: tuple[int, int] | None = None
    for p in phrases:
        at = folded.find(_fold(p))
        if at >= 0 and (best is None or (at, -len(p)) < (best[0], -best[1])):
            best = (at, len(p))
    return None if best is None else text[best[0]:best[0] + best[1]]


def judge_response(eval_set: Any, question: str, response: str, aliases: Sequence[str],
                   refusal_phrases: Sequence[str] = DEFAULT_REFUSAL_PHRASES,
                   llm_verdict: LLMVerdict | None = None) -> Verdict:
    """Label one response; ``eval_set.refusals`` says what a refusal is
    (:class:`hneurons.detection.eval_sets.EvalSet`).

    QA sets: the paper filter (``is_refusal`` with ``refusal_phrases``) drops a response first; then
    the rule judge (whole-word alias match, :func:`hneurons.judges.rules.match_alias`) or, when given,
    ``llm_verdict(question, response, aliases)``. ``Verdict.answer`` (the matched alias or refusal
    phrase) is read only by the label-aware parity span rule ``spans.method = "alias"``; the default
    spans come from the label-blind locator (:func:`hneurons.text.locator.span_by_config`).
    An empty (or whitespace-only) response is "no answer" in every set: dropped like a refusal,
    never labelled — an empty string is neither a hallucination nor a correct answer.
    """
    if not response.strip():
        return Verdict("no_answer", None, None)
    if eval_set.refusals == "faithful":
        if is_refusal_broad(response):
            return Verdict("refusal", 0, refusal_phrase(response))
        return Verdict("answer", 1, None)
    if is_refusal(response, refusal_phrases):
        return Verdict("refusal", None, None)
    alias = match_alias(response, aliases, question)
    if llm_verdict is not None:
        ok = llm_verdict(question, response, aliases)
        if ok is None:
            return Verdict("error", None, None, alias)
        return Verdict("correct", 0, alias, alias) if ok else Verdict("wrong", 1, None, alias)
    return Verdict("correct", 0, alias, alias) if alias is not None else Verdict("wrong", 1, None)


def qa_llm_judge(responses_cfg: Any, cache_dir: Path) -> LLMJudge | None:
    """The LLM judge of ``responses.judge = "llm"`` (its verdicts cached under ``cache_dir``), else None."""
    r = responses_cfg
    if r.judge != "llm":
        return None
    if not (r.judge_url and r.judge_model):
        raise ConfigError("responses.judge = llm needs responses.judge_url and responses.judge_model")
    return LLMJudge(r.judge_url, r.judge_model, cache_dir=cache_dir)
