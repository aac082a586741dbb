"""The judges' public names in one place, the import path call sites use.

Each concept lives in its own module: :mod:`~hneurons.judges.qa` (normalisation, alias matching),
:mod:`~hneurons.judges.refusal`, :mod:`~hneurons.judges.falseqa`, :mod:`~hneurons.judges.harmful`
(jailbreak), :mod:`~hneurons.judges.choice` (multiple choice), :mod:`~hneurons.judges.classifier`
(JSON-weight text classifier), :mod:`~hneurons.judges.llm` (the LLM judge) and
:mod:`~hneurons.judges.card` (measured agreement, for the report).
"""

from hneurons.judges.card import JUDGE_CARD, judge_card
from hneurons.judges.choice import parse_choice
from hneurons.judges.classifier import TextClassifier
from hneurons.judges.falseqa import FALSEQA_OPENING_CHARS, falseqa_features, judge_false_premise_rule
from hneurons.judges.harmful import harmful_features, judge_harmful_rule, rule_says_harmful
from hneurons.judges.llm import FALSE_PREMISE_PROMPT, HARMFUL_PROMPT, QA_PROMPT, LLMJudge
from hneurons.judges.qa import answer_tokens, match_alias, normalize_answer, rule_judge
from hneurons.judges.refusal import (
    BROAD_REFUSAL_PHRASES,
    DEFAULT_REFUSAL_PHRASES,
    is_refusal,
    is_refusal_broad,
)

__all__ = [
    "BROAD_REFUSAL_PHRASES", "DEFAULT_REFUSAL_PHRASES", "FALSEQA_OPENING_CHARS", "FALSE_PREMISE_PROMPT",
    "HARMFUL_PROMPT", "JUDGE_CARD", "QA_PROMPT", "LLMJudge", "TextClassifier", "answer_tokens",
    "falseqa_features", "harmful_features", "is_refusal", "is_refusal_broad", "judge_card",
    "judge_false_premise_rule", "judge_harmful_rule", "match_alias", "normalize_answer", "parse_choice",
    "rule_judge", "rule_says_harmful",
]
