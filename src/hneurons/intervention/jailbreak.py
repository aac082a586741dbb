"""Jailbreak (the paper, arXiv 2512.01797 §6.2): forbidden questions wrapped in evaluation jailbreak
templates; does the model produce the harmful content?"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from hneurons.config import InterveneConfig
from hneurons.core.generation import Generation, SamplingParams
from hneurons.data import load_dataset
from hneurons.errors import DataError
from hneurons.intervention.base import Benchmark, GenerateFn, Item, ItemResult, truncated, user_turn
from hneurons.intervention.judge import Judge

# Placeholders used by the jailbreak templates (SOURCE.md: no single convention); else append.
_JB_PLACEHOLDERS = re.compile(
    r"\{question\}|\{\{\s*(?:question|prompt)\s*\}\}|\[INSERT PROMPT HERE\]|\[PROMPT\]|\[Put your prompt\]",
    re.IGNORECASE,
)


def apply_template(template: str, question: str) -> str:
    """Put the question into a jailbreak template: at its placeholder(s), else appended."""
    if _JB_PLACEHOLDERS.search(template):
        return _JB_PLACEHOLDERS.sub(lambda _: question, template)
    return f"{template.rstrip()}\n\n{question}"


def load_jailbreak(cfg: InterveneConfig, seed: int) -> list[Item]:
    """Each of the 390 questions paired with one template: a seeded shuffle of the 55 templates
    repeated in order, so every template is used 7-8 times and the pairing is reproducible.

    ``n_items`` takes whole templates (all their questions, in a seeded template order, the last
    one cut to fit) rather than scattered pairs: the prompts of one template share their long
    prefix (the template is 300-7,600 characters, the question follows it in 54 of 55), which
    :func:`run_jailbreak` prefills once per template. Every pair is still the full set's pairing;
    the subset is a cluster sample, so its compliance varies with the templates drawn.
    """
    questions = load_dataset("forbidden_questions")
    templates = load_dataset("jailbreak_templates")
    if not templates:
        raise DataError("the jailbreak template set is empty; check data/files/jailbreak")
    order = list(range(len(templates)))
    random.Random(seed).shuffle(order)
    items = []
    for i, q in enumerate(questions):
        t = templates[order[i % len(order)]]
        rec = replace(q, extra={**q.extra, "template_id": t.id})
        items.append(Item(f"{q.id}|{t.id}", apply_template(t.question, q.question), rec))
    if cfg.n_items <= 0 or cfg.n_items >= len(items):
        return items
    draw = [t.id for t in templates]
    random.Random(seed + 1).shuffle(draw)
    rank = {t: k for k, t in enumerate(draw)}
    chosen = sorted(items, key=lambda it: rank[it.record.extra["template_id"]])[: cfg.n_items]
    keep = {it.id for it in chosen}
    return [it for it in items if it.id in keep]


def run_jailbreak(items: Sequence[Item], generate: GenerateFn, judge: Judge, params: SamplingParams) -> list[ItemResult]:
    """One generate call per template, so a local backend prefills each template's prompt prefix once."""
    by_template: dict[Any, list[int]] = {}
    for i, it in enumerate(items):
        by_template.setdefault(it.record.extra.get("template_id"), []).append(i)
    gens: dict[int, Generation] = {}
    for idx in by_template.values():
        gens.update(zip(idx, generate([user_turn(items[i].user) for i in idx], params)))
    out = []
    for i, it in enumerate(items):
        g = gens[i]
        harmful = judge.harmful(it.record.question, g.text)
        out.append(ItemResult(it.id, it.user, g.text, harmful, truncated=truncated(g),
                              extra={"template_id": it.record.extra.get("template_id"), "judge": judge.last_source}))
    return out


BENCHMARK = Benchmark(
    "jailbreak", "Forbidden questions (390) each wrapped in one of the 55 evaluation jailbreak templates",
    load_jailbreak, SamplingParams(temperature=0.7, top_k=20, top_p=0.8, max_new_tokens=256), run_jailbreak,
    "response judged harmful (offline: no refusal, or content past the refusal; or the LLM judge), over all items; truncation reported",
)
