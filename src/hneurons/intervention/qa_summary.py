"""``intervene/qa.json``: the ``qa`` family's outcome rates per set, α and condition, and its flips.

Does suppressing H-Neurons trade hallucinations for refusals, and on which kind of question? Per
set (TriviaQA, NQ-Open, BioASQ, NonExist) and α, the share of each outcome
(:data:`hneurons.intervention.qa.OUTCOMES`) with a Wilson 95 % CI, for the H-Neurons and for the
random-neuron control; how outcomes move from α = 1 to the extremes (``transitions``); and every
item whose outcome flips there, with both answers (``flips``).

Schema (α keys as in ``intervene.json``, e.g. ``"0.0"``)::

    {"sets": ["triviaqa", ...], "alphas": [0.0, 1.0, ...], "outcomes": ["correct", ...],
     "extremes": [0.0, 3.0],                      # the α compared with α = 1 (≠ 1)
     "rates": {SET: {"H" | "random": {ALPHA: {
         "n": int,                                 # items (random: pooled over seeds)
         "counts": {OUTCOME: int},
         "rates": {OUTCOME | "hallucinated" | "abstained": {"rate": float, "ci": [lo, hi]}}}}}},
     "transitions": {SET: {"H" | "random": {ALPHA: {"FROM->TO": int}}}},   # changed outcomes only
     "flips": [{"set", "item_id", "question", "condition", "alpha",
                "at_1": {"outcome", "response"}, "at_alpha": {"outcome", "response"}}]}

``hallucinated`` = wrong + fabricated, ``abstained`` = refusal + no_answer; accuracy is
``rates.correct``. Random rates are the mean over seeds, their CI the Wilson interval of the pooled
counts (as for the compliance benchmarks); transitions of the random control are summed over seeds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hneurons.intervention.qa import HALLUCINATED, OUTCOMES, QA_SETS
from hneurons.intervention.summary import alpha_key
from hneurons.intervention.sweep import item_key
from hneurons.intervention.tasks import Item
from hneurons.stats import proportion_ci

Records = Mapping[tuple[str, str, float, str], Mapping[str, Any]]
GROUPS = {"hallucinated": HALLUCINATED, "abstained": ("refusal", "no_answer")}


def _outcome(records: Records, cond: str, alpha: float, item: Item, first: str) -> Mapping[str, Any]:
    return records[item_key("qa", first if alpha == 1.0 else cond, alpha, item.id)]


def _counts(records: Records, items: Sequence[Item], cond: str, alpha: float, first: str) -> Counter[str]:
    return Counter(str(_outcome(records, cond, alpha, it, first)["extra"]["outcome"]) for it in items)


def _rates(per_seed: Sequence[Counter[str]]) -> dict[str, Any]:
    """Outcome counts and rates; over several seeds the rate is their mean, the CI of the pooled counts."""
    n = sum(sum(c.values()) for c in per_seed)
    pooled = sum(per_seed, Counter())
    names = {o: (o,) for o in OUTCOMES} | GROUPS
    out: dict[str, Any] = {"n": n, "counts": {o: pooled[o] for o in OUTCOMES}, "rates": {}}
    for name, members in names.items():
        k = sum(pooled[o] for o in members)
        _, lo, hi = proportion_ci(k, n)
        seeds = [sum(c[o] for o in members) / sum(c.values()) for c in per_seed if sum(c.values())]
        out["rates"][name] = {"rate": float(np.mean(seeds)) if seeds else float("nan"), "ci": [lo, hi]}
    return out


def _flips(records: Records, items: Sequence[Item], cond: str, alpha: float, first: str) -> list[dict[str, Any]]:
    out = []
    for it in items:
        base, now = _outcome(records, first, 1.0, it, first), _outcome(records, cond, alpha, it, first)
        if base["extra"]["outcome"] != now["extra"]["outcome"]:
            out.append({"set": it.record.extra["qa_set"], "item_id": it.id, "question": it.record.question,
                        "condition": cond, "alpha": alpha,
                        "at_1": {"outcome": base["extra"]["outcome"], "response": base["response"]},
                        "at_alpha": {"outcome": now["extra"]["outcome"], "response": now["response"]}})
    return out


def qa_summary(records: Records, items: Sequence[Item], conditions: Sequence[str],
               alphas: Sequence[float]) -> dict[str, Any]:
    """The ``qa.json`` document (schema in the module docstring) from the sweep's records."""
    first, randoms = conditions[0], list(conditions[1:])
    grid = sorted(float(a) for a in alphas)
    extremes = [a for a in sorted({grid[0], grid[-1]}) if a != 1.0] if 1.0 in grid else []
    by_set = {s: [it for it in items if it.record.extra["qa_set"] == s] for s in QA_SETS}
    by_set = {s: v for s, v in by_set.items() if v}
    groups = {"H": [first], **({"random": randoms} if randoms else {})}
    out: dict[str, Any] = {"sets": list(by_set), "alphas": grid, "outcomes": list(OUTCOMES), "extremes": extremes,
                           "rates": {}, "transitions": {}, "flips": []}
    for s, its in by_set.items():
        out["rates"][s] = {g: {alpha_key(a): _rates([_counts(records, its, c, a, first) for c in conds])
                               for a in grid} for g, conds in groups.items()}
        out["transitions"][s] = {g: {} for g in groups}
        for g, conds in groups.items():
            for a in extremes:
                flips = [f for c in conds for f in _flips(records, its, c, a, first)]
                moved = Counter(f"{f['at_1']['outcome']}->{f['at_alpha']['outcome']}" for f in flips)
                out["transitions"][s][g][alpha_key(a)] = dict(sorted(moved.items()))
                out["flips"] += flips
    return out
