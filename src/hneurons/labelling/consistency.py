"""K samples per question → one consistent label, and the balanced train / held-out split.

The paper (arXiv 2512.01797) §2 keeps a question only when all K sampled answers agree: K/K
correct is faithful (label 0), K/K wrong is hallucinated (label 1); ``min_agree`` relaxes "all"
for small models. A question with a refusal, a judge error or an empty answer is left out and
counted apart, so the counts in ``responses/stats.json`` say why each question was dropped.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

LABELLED = ("correct", "wrong")


def consistent_label(samples: list[dict], k: int, need: int) -> int | None:
    """0 (faithful) or 1 (hallucinated) when ≥ ``need`` of the first ``k`` samples agree and none is a
    refusal, empty or unjudged; None otherwise (mixed, dropped, or not sampled yet)."""
    samples = sorted(samples, key=lambda s: s["sample"])[:k]
    if len(samples) < k or any(s["verdict"] not in LABELLED for s in samples):
        return None
    n_correct = sum(s["verdict"] == "correct" for s in samples)
    return 0 if n_correct >= need else 1 if k - n_correct >= need else None


def representative(samples: list[dict]) -> dict:
    """The most frequent response (ties: first in sampling order — deterministic)."""
    counts = Counter(s["text"] for s in samples)
    best = max(counts.values())
    return next(s for s in samples if counts[s["text"]] == best)


@dataclass
class Tally:
    """Why questions were kept or dropped: the ``responses/stats.json`` counts."""

    k: int
    hist: list[int] = field(init=False)
    refusal_questions: int = 0
    no_answer_questions: int = 0
    no_answer_samples: int = 0
    mixed: int = 0

    def __post_init__(self) -> None:
        self.hist = [0] * (self.k + 1)


def label_samples(samples: list[dict], k: int, need: int, tally: Tally) -> tuple[int, dict, int] | None:
    """(label, representative sample, number correct) of one question's first ``k`` samples, or None
    when the question is dropped (``tally`` counts why)."""
    samples = sorted(samples, key=lambda s: s["sample"])[:k]
    n_correct = sum(s["verdict"] == "correct" for s in samples)
    tally.hist[n_correct] += 1
    empty = sum(s["verdict"] == "no_answer" for s in samples)
    if empty:  # dropped like a refusal, counted apart
        tally.no_answer_questions += 1
        tally.no_answer_samples += empty
        return None
    if any(s["verdict"] in ("refusal", "error") for s in samples):
        tally.refusal_questions += 1
        return None
    if n_correct >= need:
        label, verdict = 0, "correct"
    elif k - n_correct >= need:
        label, verdict = 1, "wrong"
    else:
        tally.mixed += 1
        return None
    return label, representative([s for s in samples if s["verdict"] == verdict]), n_correct


def split_classes(rows: list[dict[str, Any]], n_train: int, n_held: int, seed: int) -> dict[str, dict[str, list[str]]]:
    """Shuffle each class (seeded) and mark its first ``n_train`` rows ``train``, the next ``n_held``
    ``heldout`` (``row["split"]`` is set in place); returns the qids per split and class."""
    rng = random.Random(seed)
    splits: dict[str, dict[str, list[str]]] = {"train": {}, "heldout": {}}
    for c in (0, 1):
        members = [row for row in rows if row["label"] == c and row["span_status"] == "ok"]
        rng.shuffle(members)
        for row in members[:n_train]:
            row["split"] = "train"
        for row in members[n_train:n_train + n_held]:
            row["split"] = "heldout"
        splits["train"][str(c)] = [row["qid"] for row in members[:n_train]]
        splits["heldout"][str(c)] = [row["qid"] for row in members[n_train:n_train + n_held]]
    return splits
