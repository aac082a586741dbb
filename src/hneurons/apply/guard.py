"""Guarded generation: answer with the H-Neurons scaled by α and score each answer on the fly.

The answer comes from the package's one decode loop (:meth:`HFBackend.decode
<hneurons.core.generation.HFBackend.decode>`, the plain backend's loop: at α = 1 the text is the
plain backend's text) with :func:`~hneurons.core.hooks.record_cett` hooks on the probe's neurons and
a per-step observer (:class:`_FedCett`) that files what they record under the right row and token.

Off-by-one: the activations at position t come from the forward call whose *input* is token t.
Prefill covers the prompt; decode call c (c ≥ 1) is fed generated token c-1. A row that stops on
EOS has fed all its tokens (the last one produced the EOS logits), but a row cut by the length
limit never feeds its last token; the loop's ``feed_last`` call feeds it, so the guarded span
covers the same tokens as :func:`hneurons.apply.score.score` and both give the same probability
(tested to 1e-3).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hneurons.apply.state import (
    ABSTAIN_TEXT,
    ScoringState,
    apply_probe,
    max_context_check,
    state_of,
)
from hneurons.config import check_guard
from hneurons.core.generation import Generation, HFBackend, SamplingParams, row_seed
from hneurons.core.hooks import record_cett, scale_neurons
from hneurons.core.steps import DecodeStep, StepObserver
from hneurons.errors import ConfigError, DataError, StageError
from hneurons.text.locator import answer_chars, token_char_offsets


@dataclass(frozen=True)
class GuardOptions:
    """How guarded generation decodes, and what it does with an answer that scores as risky.

    ``alpha`` scales the H-Neurons while decoding (1 = off, 0 = silenced); an answer whose
    ``p_hallucination`` exceeds ``abstain_above`` is replaced by :data:`ABSTAIN_TEXT`;
    ``max_new_tokens`` None means the run's; row seeds are ``(seed, question index)`` unless the
    caller gives its own; ``on_long`` (``truncate`` | ``refuse``) handles prompts longer than the
    model's context.
    """

    alpha: float = 1.0
    abstain_above: float | None = None
    max_new_tokens: int | None = None
    temperature: float = 0.0
    seed: int = 0
    batch_size: int = 16
    on_long: str = "truncate"

    def __post_init__(self) -> None:
        check_guard(self.alpha, self.abstain_above)  # the CLI and server check the same before loading a model
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {self.batch_size}")


class _FedCett:
    """Decode observer: the CETT of the recorded neurons at each generated token, taken when it was fed.

    ``records`` is :func:`record_cett`'s list (one [batch, seq, k] tensor per forward call). At step
    s ≥ 1 the only call since the previous step is decode call s, which fed each row in
    ``step.rows`` its token s − 1; the prefill's records (prompt positions) are dropped. Values stay
    on the model's device until :meth:`per_row` copies them to the host once.
    """

    def __init__(self, records: list[torch.Tensor]) -> None:
        self.records = records
        self.calls: list[tuple[int, list[int], torch.Tensor]] = []  # (token index, rows, [batch, k])

    def __call__(self, step: DecodeStep) -> None:
        if step.index > 0 and self.records:  # the one forward call of this decode step
            self.calls.append((step.index - 1, step.rows, self.records[-1][:, -1]))
        self.records.clear()

    def per_row(self, lengths: Sequence[int], k: int) -> list[np.ndarray]:
        """[lengths[row], k] float32 per row; NaN where a token was never fed (cannot happen)."""
        out = [np.full((n, k), np.nan, dtype=np.float32) for n in lengths]
        if not self.calls:
            return out
        values = torch.cat([v for _, _, v in self.calls]).float().cpu().numpy()
        at = 0
        for t, rows, v in self.calls:
            for b, r in enumerate(rows):
                if t < lengths[r]:
                    out[r][t] = values[at + b]
            at += len(rows)
        return out


def _response_span(state: ScoringState, question: str, ids: Sequence[int]) -> tuple[int, int] | None:
    """Generated tokens ``[start, end)`` of the answer, chosen by the run's locator as :func:`score` does.

    The locator works on characters; each generated token's characters come from decoding growing
    prefixes (:func:`hneurons.text.locator.token_char_offsets`), special tokens decode to nothing.
    """
    text, offsets = token_char_offsets(state.loaded.tokenizer, ids)
    lead = len(text) - len(text.lstrip())
    got = answer_chars(question, text.strip(), state.use_span_method, state.span_llm)
    if got is None:
        return None
    cs, ce = got[0] + lead, got[1] + lead
    hits = [i for i, (a, b) in enumerate(offsets) if a < b and a < ce and b > cs]
    return (hits[0], hits[-1] + 1) if hits else None


def _encode(state: ScoringState, backend: HFBackend, questions: Sequence[str], params: SamplingParams,
            on_long: str) -> list[list[int]]:
    """Each question's prompt ids, cut from the left when prompt + answer would exceed the context."""
    limit = state.max_context
    budget = None if limit is None else limit - params.max_new_tokens
    if budget is not None and budget < 1:
        raise ConfigError(f"max_new_tokens={params.max_new_tokens} leaves no room for a prompt in the model's context ({limit})")
    encoded = []
    for i, q in enumerate(questions):
        if not isinstance(q, str) or not q.strip():
            raise DataError(f"question {i} is empty; every question needs text")
        ids = backend.encode(state.prompt(q))
        cut = max_context_check(len(ids), len(ids), budget, on_long, f"question {i}")
        encoded.append(ids[cut:])
    return encoded


def _decode(state: ScoringState, questions: Sequence[str], opts: GuardOptions, seeds: Sequence[int] | None,
            observer: StepObserver | None) -> tuple[list[Generation], list[np.ndarray], list[int]]:
    """The answers, the recorded neurons' CETT per generated token, and each prompt's length."""
    params = SamplingParams(temperature=opts.temperature, max_new_tokens=opts.max_new_tokens or state.max_new_tokens,
                            stop=state.stop)
    loaded, k = state.loaded, len(state.record)
    backend = HFBackend(loaded.model, loaded.tokenizer, batch_size=opts.batch_size)
    encoded = _encode(state, backend, questions, params, opts.on_long)
    row_seeds = list(seeds) if seeds is not None else [row_seed(opts.seed, i, 0) for i in range(len(questions))]
    with ExitStack() as stack:
        if opts.alpha != 1.0:
            stack.enter_context(scale_neurons(loaded.layout, state.h_neurons, opts.alpha))
        fed = _FedCett(stack.enter_context(record_cett(loaded.layout, state.record))) if k else None
        gens = backend.decode(encoded, row_seeds, params, observer=_chain(fed, observer), feed_last=bool(k))
    lengths = [len(g.token_ids) for g in gens]
    cett = fed.per_row(lengths, k) if fed else [np.zeros((n, 0), dtype=np.float32) for n in lengths]
    return gens, cett, [len(ids) for ids in encoded]


def _chain(*observers: StepObserver | None) -> StepObserver | None:
    """One observer calling each given one in turn (None when none is given)."""
    given = [o for o in observers if o is not None]
    if len(given) < 2:
        return given[0] if given else None

    def chained(step: DecodeStep) -> None:
        for o in given:
            o(step)

    return chained


def guarded_generate(
    run_dir_or_state: str | Path | ScoringState,
    questions: Sequence[str],
    options: GuardOptions | None = None,
    *,
    seeds: Sequence[int] | None = None,
    observer: StepObserver | None = None,
    model: Any = None,
    force: bool = False,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Answer questions with the H-Neurons scaled by α and score each answer on the fly.

    ``options`` (:class:`GuardOptions`), with any of its fields given as keywords on top
    (``guarded_generate(state, qs, alpha=0.5)``). The probe's non-zero neurons are recorded during
    the same decoding loop (no second forward); the span is the run's label-blind answer span (as in
    training), positions counted in the sequence the model saw. An answer whose ``p_hallucination``
    exceeds ``abstain_above`` is replaced by :data:`ABSTAIN_TEXT` (``abstained: true``; the model's
    text stays in ``response``). ``seeds`` fixes each row's stream independently of the batch (the
    server does). ``observer`` sees every decode step (:mod:`hneurons.core.steps`; rows are question
    indices), e.g. to stream tokens or stop a row whose client left (its answer is scored as far as
    it got, ``finish_reason == "cancelled"``).
    """
    try:
        opts = dataclasses.replace(options or GuardOptions(), **overrides)
    except TypeError as exc:
        raise ConfigError(f"guarded_generate: {exc}; options are {', '.join(f.name for f in dataclasses.fields(GuardOptions))}") from None
    state = state_of(run_dir_or_state, model, force)
    if seeds is not None and len(seeds) != len(questions):
        raise ConfigError(f"seeds has {len(seeds)} entries for {len(questions)} questions")
    gens, cett, prompt_lens = _decode(state, questions, opts, seeds, observer)
    results, x_rows, scored = [], [], []
    for i, gen in enumerate(gens):
        out, span = _result(state, questions[i], gen, opts.alpha, prompt_lens[i])
        results.append(out)
        if span is not None and gen.finish_reason == "cancelled":
            span = _fed(cett[i], span)
        if span is not None:
            x_rows.append(_span_mean(cett[i], span))
            scored.append(i)
    if scored:
        p, tops = apply_probe(state, np.stack(x_rows).reshape(len(scored), len(state.record)))
        for row, i in enumerate(scored):
            results[i].update(p_hallucination=float(p[row]), top_neurons=tops[row])
            if opts.abstain_above is not None and p[row] > opts.abstain_above:
                results[i].update(answer=ABSTAIN_TEXT, abstained=True)
    return results


def _result(state: ScoringState, question: str, gen: Generation, alpha: float,
            prompt_len: int) -> tuple[dict[str, Any], tuple[int, int] | None]:
    """One answer's result row, and its answer span in generated tokens (None: none located)."""
    out: dict[str, Any] = {"question": question, "answer": gen.text, "response": gen.text,
                           "p_hallucination": None, "abstained": False, "alpha": float(alpha),
                           "finish_reason": gen.finish_reason, "prompt_tokens": prompt_len,
                           "completion_tokens": len(gen.token_ids), "span": None, "span_status": "ok",
                           "top_neurons": []}
    span = _response_span(state, question, gen.token_ids)
    if span is None:
        out["span_status"] = "empty response" if not gen.token_ids else "response has only whitespace/punctuation tokens"
        return out, None
    s, e = span
    text = state.loaded.tokenizer.decode(list(gen.token_ids[s:e]), skip_special_tokens=True).strip()
    out["span"] = {"start": prompt_len + s, "end": prompt_len + e, "text": text}
    return out, span


def _fed(cett: np.ndarray, span: tuple[int, int]) -> tuple[int, int] | None:
    """The part of a cancelled row's span the model was fed: its last drawn token never was."""
    unfed = np.flatnonzero(~np.isfinite(cett).all(axis=1))
    end = min(span[1], int(unfed[0])) if unfed.size else span[1]
    return (span[0], end) if end > span[0] else None


def _span_mean(cett: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    """Mean CETT over the answer's generated tokens (every one was fed once, so none is missing)."""
    vals = cett[span[0]:span[1]].astype(np.float64)
    if not np.isfinite(vals).all():
        raise StageError("internal error: an answer token's activations were not recorded")
    return vals.mean(axis=0) if vals.shape[1] else np.zeros(0)
