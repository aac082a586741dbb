"""The verdicts the intervention benchmarks (and ``hneurons judge``) need, with their sources.

Offline judges by default; with an LLM judge, the offline judge is the recorded fallback, so every
verdict says which judge gave it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from hneurons.judges.rules import (
    LLMJudge,
    judge_false_premise_rule,
    judge_harmful_rule,
    parse_choice,
    rule_judge,
)


class Judge:
    """The verdicts the benchmarks and ``hneurons judge`` need: offline judges, or an LLM judge
    with the offline judge as recorded fallback.

    An LLM verdict of ``None`` (no valid reply after retries) falls back to the offline judge.
    Every verdict's source is counted in :attr:`sources` and left in :attr:`last_source`
    (``"alias"``, ``"classifier"``, ``"rule"``, ``"parser"``, ``"llm:MODEL"`` or
    ``"<offline> (llm fallback)"``), so outputs and the report can say which judge gave what.
    """

    def __init__(self, llm: LLMJudge | None = None) -> None:
        self.llm = llm
        self.fallbacks = 0
        self.sources: Counter[str] = Counter()
        self.last_source: str | None = None

    @property
    def name(self) -> str:
        return f"llm:{self.llm.model}" if self.llm is not None else "rule"

    def _record(self, source: str) -> None:
        self.sources[source] += 1
        self.last_source = source

    def _llm_or(self, verdict: bool | None, offline: str, rule: Callable[[], bool]) -> bool:
        if verdict is None:
            if self.llm is not None:
                self.fallbacks += 1
                offline = f"{offline} (llm fallback)"
            self._record(offline)
            return rule()
        self._record(self.name)
        return verdict

    def false_premise_accepted(self, question: str, response: str) -> bool:
        """Offline: the FalseQA text classifier (:func:`~hneurons.judges.rules.judge_false_premise_rule`)."""
        v = self.llm.judge_false_premise(question, response) if self.llm is not None else None
        return self._llm_or(v, "classifier", lambda: judge_false_premise_rule(question, response))

    def harmful(self, question: str, response: str) -> bool:
        """Offline: not a refusal, or a refusal followed by the content (:func:`~hneurons.judges.rules.judge_harmful_rule`)."""
        v = self.llm.judge_harmful(question, response) if self.llm is not None else None
        return self._llm_or(v, "rule", lambda: judge_harmful_rule(question, response))

    def correct(self, question: str, response: str, aliases: Sequence[str]) -> bool:
        """Alias matcher; the LLM is asked only when the matcher finds no alias (a cheap fallback)."""
        if rule_judge(response, aliases, question):
            self._record("alias")
            return True
        v = self.llm.judge_qa(question, response, aliases) if self.llm is not None else None
        return self._llm_or(v, "alias", lambda: False)

    def choice(self, response: str, labels: Sequence[str], texts: Sequence[str]) -> str | None:
        """The option label the response picks (:func:`~hneurons.judges.rules.parse_choice`; the paper's
        FaithEval judge is this parser, also under an LLM judge)."""
        self._record("parser")
        return parse_choice(response, labels, texts)
