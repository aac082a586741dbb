"""The uniform record every dataset loads into, and the question key used to de-duplicate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Record:
    """One dataset item in the shape every stage consumes."""

    id: str
    question: str
    answers: tuple[str, ...] = ()
    """Gold aliases for alias-judged sets; empty when not applicable."""
    label: int | None = None
    """Dataset label, e.g. FalseQA 1 = false premise; reference verdict for judge-validation sets."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Dataset-specific fields (context, choices, answerKey, category, response, ...)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the inverse of :meth:`from_dict`)."""
        return {"id": self.id, "question": self.question, "answers": list(self.answers),
                "label": self.label, "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Record:
        return cls(id=str(d["id"]), question=str(d["question"]), answers=tuple(d.get("answers") or ()),
                   label=d.get("label"), extra=dict(d.get("extra") or {}))


def question_key(text: str) -> str:
    """Normalised question text used for de-duplication (lower-case, collapsed whitespace)."""
    return " ".join(text.lower().split())
