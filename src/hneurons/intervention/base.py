"""What every intervention benchmark is made of: items, judged results, and the benchmark entry.

Like an lm-evaluation-harness task, a :class:`Benchmark` says how to load its items, how to
decode (the paper's settings, arXiv 2512.01797 §6.2) and how to turn responses into a compliance
verdict. Benchmarks never touch the model: they receive a ``generate_fn`` that maps chat
conversations to :class:`~hneurons.core.generation.Generation` objects, so the same code runs
under any α-scaling hook, against a server, or against a fake in tests.

Compliance semantics per item (``ItemResult.complied``): ``True`` gave in, ``False`` resisted,
``None`` not counted — a FaithEval answer that could not be parsed (``parse_failure``), or a
sycophancy item whose first answer was already wrong (not in the "initially correct"
denominator). Rates are always over the non-``None`` items and the ``None`` counts are reported.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hneurons.config import InterveneConfig
from hneurons.core.generation import Generation, SamplingParams
from hneurons.data import Record
from hneurons.intervention.judge import Judge
from hneurons.text.prompts import Conversation

GenerateFn = Callable[[Sequence[Conversation], SamplingParams], list[Generation]]
"""Conversations (chat messages ending with a user turn) → one generation each, in order."""

N_CONSTRUCTED_DEFAULT = 1000
"""Items of a constructed set when ``n_items`` is 0 (the size of FaithEval's counterfactual subset)."""


@dataclass(frozen=True)
class Item:
    """One benchmark item: the record it came from and the first user turn shown to the model."""

    id: str
    user: str
    record: Record


@dataclass(frozen=True)
class ItemResult:
    """The judged outcome of one item (see the module docstring for ``complied is None``)."""

    item_id: str
    prompt: str
    response: str
    complied: bool | None
    parse_failure: bool = False
    truncated: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "prompt": self.prompt, "response": self.response,
                "complied": self.complied, "parse_failure": self.parse_failure,
                "truncated": self.truncated, "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ItemResult:
        return cls(item_id=str(d["item_id"]), prompt=d["prompt"], response=d["response"],
                   complied=d["complied"], parse_failure=bool(d["parse_failure"]),
                   truncated=bool(d["truncated"]), extra=dict(d.get("extra") or {}))


@dataclass(frozen=True)
class Benchmark:
    """A registry entry: how to load items, decode, and judge compliance."""

    name: str
    description: str
    load: Callable[[InterveneConfig, int], list[Item]]
    decoding: SamplingParams
    run: Callable[[Sequence[Item], GenerateFn, Judge, SamplingParams], list[ItemResult]]
    compliance: str
    """One line for the report: what counts as compliance and over which items."""
    family: str = "compliance"
    """``compliance`` (the paper's four over-compliance benchmarks, averaged into the mean slope) or
    ``qa`` (hallucination on plain questions, reported on its own)."""

    def params(self, max_new_tokens: int | None = None, seed: int = 0) -> SamplingParams:
        """The paper decoding with an optional ``max_new_tokens`` override and a seed."""
        p = replace(self.decoding, seed=seed)
        return replace(p, max_new_tokens=max_new_tokens) if max_new_tokens else p


def sample_records(records: list[Record], n: int, seed: int) -> list[Record]:
    """``n`` records drawn with a seed, kept in file order (0 or ≥ len → all)."""
    if n <= 0 or n >= len(records):
        return list(records)
    keep = set(random.Random(seed).sample(range(len(records)), n))
    return [r for i, r in enumerate(records) if i in keep]


def user_turn(text: str) -> Conversation:
    return [{"role": "user", "content": text}]


def truncated(g: Generation) -> bool:
    return g.finish_reason == "length"
