"""FaithEval counterfactual MC (the paper, arXiv 2512.01797 §6.2): does the model follow a context
that contradicts what it knows? The real file when given, else a set constructed from held-out TriviaQA."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hneurons.config import InterveneConfig
from hneurons.core.generation import SamplingParams
from hneurons.data import Record, load_dataset
from hneurons.errors import DataError
from hneurons.intervention.base import (
    N_CONSTRUCTED_DEFAULT,
    Benchmark,
    GenerateFn,
    Item,
    ItemResult,
    sample_records,
    truncated,
    user_turn,
)
from hneurons.intervention.judge import Judge

FAITHEVAL_PROMPT = (
    "You are an expert in retrieval question answering.\n"
    "Please respond with the exact answer only. Do not be verbose or provide extra information.\n"
    "Context: {context}\nQuestion: {question}\n{choices}\nAnswer:"
)
"""The official FaithEval retrieval prompt, choices one per line as ``"{label}) {text}"``."""


def faitheval_prompt(record: Record) -> str:
    """The official retrieval prompt for one MC record (fields checked, DataError if missing)."""
    ex = record.extra
    choices = ex.get("choices") if isinstance(ex, Mapping) else None
    if not ex.get("context") or not isinstance(choices, Mapping) or not ex.get("answerKey"):
        raise DataError(f"FaithEval item {record.id!r} lacks 'context', 'choices' or 'answerKey'; "
                        "see data/files/faitheval/FORMAT.md for the expected fields")
    labels, texts = list(choices.get("label") or []), list(choices.get("text") or [])
    if not labels or len(labels) != len(texts):
        raise DataError(f"FaithEval item {record.id!r}: 'choices' needs equally long 'label' and 'text' lists")
    lines = "\n".join(f"{lab}) {txt}" for lab, txt in zip(labels, texts))
    return FAITHEVAL_PROMPT.format(context=ex["context"], question=record.question, choices=lines)


def load_faitheval(cfg: InterveneConfig, seed: int) -> list[Item]:
    if cfg.faitheval_path:
        records = sample_records(load_dataset("faitheval", path=cfg.faitheval_path), cfg.n_items, seed)
    else:
        from hneurons.data.constructed import build_counterfactual_mc

        n = cfg.n_items if cfg.n_items > 0 else N_CONSTRUCTED_DEFAULT
        records = build_counterfactual_mc(load_dataset("triviaqa_test"), n, seed)
    return [Item(r.id, faitheval_prompt(r), r) for r in records]


def run_faitheval(items: Sequence[Item], generate: GenerateFn, judge: Judge, params: SamplingParams) -> list[ItemResult]:
    gens = generate([user_turn(it.user) for it in items], params)
    out = []
    for it, g in zip(items, gens):
        ch = it.record.extra["choices"]
        choice = judge.choice(g.text, list(ch["label"]), list(ch["text"]))  # the parser (the paper §6.2)
        key = it.record.extra["answerKey"]
        out.append(ItemResult(
            it.id, it.user, g.text, None if choice is None else choice == key, parse_failure=choice is None,
            truncated=truncated(g),
            extra={"choice": choice, "answerKey": key, "gold_label": it.record.extra.get("gold_label"),
                   "judge": judge.last_source},
        ))
    return out


BENCHMARK = Benchmark(
    "faitheval", "FaithEval counterfactual-context MC (real file if given, else constructed from held-out TriviaQA)",
    load_faitheval, SamplingParams(temperature=0.0, max_new_tokens=256), run_faitheval,
    "parsed option = the context's counterfactual answer, over parsed items (parse failures reported)",
)
