"""The ``qa`` benchmark family: what scaling the H-Neurons does to question answering itself.

The paper (arXiv 2512.01797) §6 measures over-compliance; this family asks the question its
limitations leave open: does suppressing H-Neurons trade hallucinations for refusals, and on which
kind of question? Held-out questions of the detection scenarios (§5) are answered under the
paper's QA prompt, greedily, and each answer gets one *outcome*:

* TriviaQA, NQ-Open, BioASQ: ``correct`` | ``wrong`` | ``refusal`` (the paper's refusal filter) |
  ``no_answer`` (empty);
* NonExist (fabricated entities, where a refusal is the faithful answer): ``refusal`` |
  ``fabricated`` (any confident answer) | ``no_answer``.

``complied`` (the quantity every benchmark's summary and slope use) is "hallucinated": a wrong
or a fabricated answer. :mod:`hneurons.intervention.qa_summary` turns the outcomes into rates per
set with the random-neuron control and lists the items whose outcome flips.

TriviaQA questions the probe stage used to choose C (the suppression term reads the last
``probe.suppression_questions`` of ``triviaqa_test`` at α = 0) are left out, so the neurons were
never selected on the questions they are measured on.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

from hneurons.config import PAPER_SUFFIX, InterveneConfig
from hneurons.core.generation import SamplingParams
from hneurons.data import load_dataset
from hneurons.data.constructed import build_nonexist
from hneurons.detection.eval_sets import EVAL_SETS, packaged_texts
from hneurons.intervention.base import Benchmark, GenerateFn, Item, ItemResult, sample_records, truncated, user_turn
from hneurons.intervention.judge import Judge
from hneurons.labelling.verdicts import judge_response
from hneurons.text.prompts import user_text

QA_SETS = ("triviaqa", "nq_open", "bioasq", "nonexist")
"""The question kinds, in report order (names of :data:`hneurons.detection.eval_sets.EVAL_SETS`)."""

QA_PER_SET_DEFAULT = 500
"""Questions per set when ``intervene.n_items`` is 0 ("all" would be 11,313 TriviaQA questions)."""

OUTCOMES = ("correct", "wrong", "refusal", "fabricated", "no_answer")
HALLUCINATED = ("wrong", "fabricated")


def load_qa(cfg: InterveneConfig, seed: int, exclude: Collection[str] = ()) -> list[Item]:
    """``n_items`` questions of each of :data:`QA_SETS` (seeded draw, file order), none of ``exclude``.

    Item ids are ``"<set>:<question id>"``; the set name is also in ``record.extra["qa_set"]``.
    """
    n = cfg.n_items if cfg.n_items > 0 else QA_PER_SET_DEFAULT
    items = []
    for name in QA_SETS:
        es = EVAL_SETS[name]
        if es.dataset is None:
            records = build_nonexist(n, seed=seed, exclude_texts=packaged_texts())
        else:
            pool = [r for r in load_dataset(es.dataset) if r.id not in exclude]
            records = sample_records(pool, n, seed)
        for r in records:
            rec = replace(r, extra={**r.extra, "qa_set": name})
            items.append(Item(f"{name}:{r.id}", user_text(r.question, PAPER_SUFFIX), rec))
    return items


def outcome(item: Item, response: str, judge: Judge) -> str:
    """One of :data:`OUTCOMES` (see the module docstring); correctness goes through ``judge``
    (alias match, then the LLM judge when one is configured)."""
    es = EVAL_SETS[item.record.extra["qa_set"]]
    rec = item.record
    v = judge_response(es, rec.question, response, rec.answers)
    if es.refusals == "faithful":
        return {"answer": "fabricated"}.get(v.verdict, v.verdict)
    if v.verdict in ("refusal", "no_answer"):
        return v.verdict
    return "correct" if judge.correct(rec.question, response, rec.answers) else "wrong"


def run_qa(items: Sequence[Item], generate: GenerateFn, judge: Judge, params: SamplingParams) -> list[ItemResult]:
    gens = generate([user_turn(it.user) for it in items], params)
    out = []
    for it, g in zip(items, gens):
        o = outcome(it, g.text, judge)
        source = judge.last_source if o in ("correct", "wrong") else "rule"
        out.append(ItemResult(it.id, it.user, g.text, o in HALLUCINATED, truncated=truncated(g),
                              extra={"qa_set": it.record.extra["qa_set"], "outcome": o, "judge": source}))
    return out


BENCHMARK = Benchmark(
    "qa", "held-out TriviaQA, NQ-Open, BioASQ and NonExist questions under the paper's QA prompt (greedy)",
    load_qa, SamplingParams(temperature=0.0, max_new_tokens=50), run_qa,
    "hallucinated: a wrong answer (QA sets) or a fabricated one (NonExist), over all items; "
    "per-set accuracy, refusal and fabrication rates in intervene/qa.json",
    family="qa",
)
