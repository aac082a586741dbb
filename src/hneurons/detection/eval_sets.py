"""The held-out detection sets: what each loads, how it is judged, and the balanced subset.

The paper (arXiv 2512.01797) §5 tests the probe on balanced held-out sets from four scenarios:
in-domain TriviaQA, cross-domain NQ-Open and BioASQ, and questions about fabricated entities
(NonExist), where a refusal is the faithful answer. :data:`EVAL_SETS` names them (the config key
``detect.sets`` picks from it), :func:`questions` loads a set's questions (building NonExist once
per run) and :func:`balance` draws the equal-class subset the numbers are computed on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hneurons.core import distributed
from hneurons.data.registry import Record
from hneurons.errors import ConfigError, DataError, HNeuronsError
from hneurons.registry import Registry

QA_NOTE = "rule judge on gold aliases; paper refusal filter drops refusals"


@dataclass(frozen=True)
class EvalSet:
    """One detection set.

    ``dataset`` is the :mod:`hneurons.data` registry name (``None`` for the constructed NonExist
    set). ``refusals`` says what a refusal is: ``"drop"`` — removed by the paper's substring filter
    before judging (the QA sets); ``"faithful"`` — a refusal/denial is the right answer (label 0)
    and any confident answer is a hallucination (label 1), judged with ``is_refusal_broad``.
    """

    name: str
    dataset: str | None
    description: str
    refusals: str
    note: str


EVAL_SETS: Registry[EvalSet] = Registry("evaluation set")
for _es in (
    EvalSet("triviaqa", "triviaqa_test", "held-out TriviaQA (DPR test split, disjoint from the training pool)",
            "drop", QA_NOTE),
    EvalSet("nq_open", "nq_open", "NQ-Open dev", "drop", QA_NOTE),
    EvalSet("bioasq", "bioasq", "BioASQ factoid (cross-domain)", "drop", QA_NOTE),
    EvalSet("smoke", "smoke_heldout", "easy questions + held-out TriviaQA (smoke preset only)", "drop", QA_NOTE),
    EvalSet("nonexist", None, "questions about fabricated entities (HalluLens style)", "faithful",
            "label 1 = a confident answer, 0 = refusal/denial (is_refusal_broad); "
            "the answer span of a refusal is its refusal phrase (or the whole response)"),
):
    EVAL_SETS.register(_es.name, _es)


def packaged_texts() -> list[str]:
    """Questions and answers of every packaged dataset, so no NonExist entity occurs in any of them."""
    from hneurons.data import list_datasets, load_dataset

    texts: list[str] = []
    for spec in list_datasets():
        if not spec.files:
            continue
        try:
            recs = load_dataset(spec.name)
        except HNeuronsError:
            continue  # a packaged file that is absent in this install cannot contain the entity
        for r in recs:
            texts.append(r.question)
            texts.extend(r.answers)
    return texts


def questions(es: EvalSet, n: int, nonexist_file: Path, seed: int) -> list[Record]:
    """The first ``n`` questions of a set; NonExist is built once (seeded, avoiding every entity of
    the packaged datasets) and kept in ``nonexist_file`` so a resumed run asks the same questions."""
    from hneurons.data import load_dataset
    from hneurons.data.constructed import build_nonexist
    from hneurons.data.registry import load_records, save_records

    if es.dataset is not None:
        return load_dataset(es.dataset, limit=n)
    if nonexist_file.is_file():
        recs = load_records(nonexist_file)
        if len(recs) >= n:
            return recs[:n]
    recs = build_nonexist(n, seed=seed, exclude_texts=packaged_texts())
    if distributed.is_main():  # every rank builds the same set; one writes it
        save_records(recs, nonexist_file)
    return recs


@dataclass(frozen=True)
class Balanced:
    """Outcome of :func:`balance`: kept indices (sorted), class counts before/after, why it failed."""

    indices: np.ndarray
    available: dict[str, int]
    kept: dict[str, int]
    reason: str | None = None


def balance(labels: Sequence[int], per_class: int, min_per_class: int, seed: int) -> Balanced:
    """Equal numbers of faithful (0) and hallucinated (1) items, at most ``per_class`` each.

    The majority class is downsampled uniformly at random (seeded); when the minority has fewer
    than ``min_per_class`` items nothing is kept and ``reason`` says so with the counts.
    """
    y = np.asarray(labels, dtype=np.int64)
    if y.size and not np.isin(y, (0, 1)).all():
        raise DataError("labels must be 0 (faithful) or 1 (hallucinated)")
    if per_class < 1 or min_per_class < 1:
        raise ConfigError(f"detect.per_class ({per_class}) and detect.min_per_class ({min_per_class}) must be >= 1")
    idx = {c: np.flatnonzero(y == c) for c in (0, 1)}
    available = {str(c): int(idx[c].size) for c in (0, 1)}
    minority = min(available.values())
    if minority < min_per_class:
        return Balanced(np.empty(0, dtype=np.int64), available, {"0": 0, "1": 0},
                        f"too few items per class: {available['0']} faithful and {available['1']} hallucinated, "
                        f"need >= {min_per_class} of each (detect.min_per_class); sample more questions "
                        "(detect.n_questions) or lower the minimum")
    n = min(minority, per_class)
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.choice(idx[c], n, replace=False) if idx[c].size > n else idx[c] for c in (0, 1)]))
    return Balanced(keep, available, {"0": n, "1": n})
