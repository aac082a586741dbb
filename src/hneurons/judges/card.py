"""The judge card: each offline judge's measured agreement with reference labels, for the report.

Written by ``benchmarks/judges.py`` to ``hneurons/data/files/judge_validation/judge_card.json``
(where the report and ``hneurons compare`` read it). Fields per task
(``triviaqa``, ``falseqa``, ``jailbreak``, ``mc``): ``judge``, ``n``, ``agree``, ``agreement``,
``ci95`` (Wilson), ``method`` (e.g. grouped cross-validation), ``validation`` (the labelled file),
``confusion`` ({"tp", "fp", "fn", "tn"}, positive = the judge's positive verdict) and task extras.
"""

from __future__ import annotations

import json
from functools import lru_cache

from hneurons.data.registry import PACKAGED_DATA

JUDGE_CARD = PACKAGED_DATA / "judge_validation" / "judge_card.json"


@lru_cache(maxsize=1)
def judge_card() -> dict[str, dict]:
    """The packaged judge card (``judge_validation/judge_card.json``): per judge, n, agreement
    and its 95% Wilson interval on its validation set, as written by ``benchmarks/judges.py``.
    Empty when the file is missing, so a report still renders (without the agreement)."""
    try:
        card = json.loads(JUDGE_CARD.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return card.get("judges", {}) if isinstance(card, dict) else {}
