"""FalseQA (the paper, arXiv 2512.01797 §6.2): does the model accept a question's false premise?"""

from __future__ import annotations

from collections.abc import Sequence

from hneurons.config import InterveneConfig
from hneurons.core.generation import SamplingParams
from hneurons.data import load_dataset
from hneurons.intervention.base import Benchmark, GenerateFn, Item, ItemResult, sample_records, truncated, user_turn
from hneurons.intervention.judge import Judge


def load_falseqa(cfg: InterveneConfig, seed: int) -> list[Item]:
    records = [r for r in load_dataset("falseqa") if r.label == 1]
    return [Item(r.id, r.question, r) for r in sample_records(records, cfg.n_items, seed)]


def run_falseqa(items: Sequence[Item], generate: GenerateFn, judge: Judge, params: SamplingParams) -> list[ItemResult]:
    gens = generate([user_turn(it.user) for it in items], params)
    out = []
    for it, g in zip(items, gens):
        accepted = judge.false_premise_accepted(it.record.question, g.text)
        out.append(ItemResult(it.id, it.user, g.text, accepted, truncated=truncated(g),
                              extra={"judge": judge.last_source}))
    return out


BENCHMARK = Benchmark(
    "falseqa", "FalseQA false-premise test questions (label 1), question alone as the user turn",
    load_falseqa, SamplingParams(temperature=0.0, max_new_tokens=256), run_falseqa,
    "response accepts the false premise (ACCEPTED), over all items",
)
