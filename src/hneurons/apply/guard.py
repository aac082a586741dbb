"""Guarded generation: answer with the H-Neurons scaled by α and score each answer on the fly.

Off-by-one: the activations at position t come from the forward call whose *input* is token t.
Prefill covers the prompt; decode call c (c ≥ 1) is fed generated token c-1. A row that stops on
EOS has fed all its tokens (the last one produced the EOS logits), but a row cut by the length
limit never feeds its last token; one extra decode step feeds it, so the guarded span covers the
same tokens as :func:`hneurons.apply.score.score` and both give the same probability (tested to 1e-3).
"""

from __future__ import annotations

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
from hneurons.errors import ConfigError, DataError, StageError
from hneurons.text.locator import answer_chars, token_char_offsets


@dataclass
class _Decoded:
    generation: Generation
    cett: np.ndarray  # [len(token_ids), k]: CETT of each generated token when it was fed
    prompt_len: int


class _RecordingDecoder(HFBackend):
    """:class:`HFBackend`'s decoding loop, unchanged, plus per-token CETT of a few neurons.

    The loop (left padding, positions, cache, trimming of finished rows, per-row generators) is the
    backend's own, step for step, so at α = 1 the text is the plain backend's text.
    """

    def __init__(self, model: Any, tokenizer: Any, layout: Any, batch_size: int) -> None:
        super().__init__(model, tokenizer, batch_size=batch_size)
        self.layout = layout

    def run(self, prompts: list[list[int]], seeds: list[int], params: SamplingParams, neurons: np.ndarray) -> list[_Decoded]:
        device = next(self.model.parameters()).device
        rows = len(prompts)
        input_ids, attention, positions = self._left_padded(prompts, device)
        generators = self._generators(seeds, device)
        cache = self._new_cache()
        order = list(range(rows))
        live = [True] * rows
        tokens: list[list[int]] = [[] for _ in range(rows)]
        reasons = ["length"] * rows
        eos = torch.tensor(sorted(self.eos_ids), device=device)
        last_pos = positions[:, -1]
        calls: list[list[int]] = []  # per decode call: the row at each batch position
        k = len(neurons)
        with ExitStack() as stack:
            records = stack.enter_context(record_cett(self.layout, neurons)) if k else []
            logits = self._forward(input_ids, attention, positions, cache)
            hit_limit = False
            for step in range(params.max_new_tokens):
                nxt = self._next_tokens(logits, params, [generators[r] for r in order])
                self._consume(nxt, eos, params, order, live, tokens, reasons)
                if not any(live):
                    break
                if step == params.max_new_tokens - 1:
                    hit_limit = True
                    break
                if self.trim_finished and not all(live):
                    attention, last_pos, nxt, order, live = self._drop_finished(
                        cache, live, order, attention, last_pos, nxt)
                attention = torch.cat([attention, attention.new_ones((len(attention), 1))], dim=1)
                last_pos = last_pos + 1
                logits = self._forward(nxt[:, None], attention, last_pos[:, None], cache)
                calls.append(list(order))
            if k and hit_limit:
                # rows cut by the length limit never fed their last token: feed it once more
                attention = torch.cat([attention, attention.new_ones((len(attention), 1))], dim=1)
                self._forward(nxt[:, None], attention, (last_pos + 1)[:, None], cache)
                calls.append(list(order))
        gens = [self._finish(tokens[r], params, reasons[r]) for r in range(rows)]
        decoded_rows = torch.cat([rec[:, -1] for rec in records[1:]]).cpu().numpy() if k and calls else None
        where: dict[tuple[int, int], int] = {}
        at = 0
        for c, ordr in enumerate(calls):
            for b, r in enumerate(ordr):
                where[(r, c)] = at + b
            at += len(ordr)
        out = []
        for r, gen in enumerate(gens):
            cett = np.full((len(gen.token_ids), k), np.nan, dtype=np.float32)
            for t in range(len(gen.token_ids)):
                idx = where.get((r, t))
                if idx is not None and decoded_rows is not None:
                    cett[t] = decoded_rows[idx]
            out.append(_Decoded(gen, cett, len(prompts[r])))
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


def guarded_generate(
    run_dir_or_state: str | Path | ScoringState,
    questions: Sequence[str],
    *,
    alpha: float = 1.0,
    abstain_above: float | None = None,
    max_new_tokens: int | None = None,
    temperature: float = 0.0,
    seeds: Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 16,
    on_long: str = "truncate",
    model: Any = None,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Answer questions with the H-Neurons scaled by ``alpha`` and score each answer on the fly.

    The probe's non-zero neurons are recorded during the same decoding loop (no second forward);
    the span is the run's label-blind answer span (as in training), positions counted in the
    sequence the model saw. With ``abstain_above``, an answer whose ``p_hallucination`` exceeds it
    is replaced by :data:`ABSTAIN_TEXT` (``abstained: true``; the model's text stays in ``response``).
    Row seeds default to ``(seed, question index)`` as in :class:`HFBackend`; pass ``seeds`` to fix
    each row's stream independently of the batch (the server does).
    """
    state = state_of(run_dir_or_state, model, force)
    check_guard(alpha, abstain_above)  # the CLI and server check the same before loading a model
    if seeds is not None and len(seeds) != len(questions):
        raise ConfigError(f"seeds has {len(seeds)} entries for {len(questions)} questions")
    for i, q in enumerate(questions):
        if not isinstance(q, str) or not q.strip():
            raise DataError(f"question {i} is empty; every question needs text")
    params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens or state.max_new_tokens, stop=state.stop)
    loaded = state.loaded
    tok = loaded.tokenizer
    decoder = _RecordingDecoder(loaded.model, tok, loaded.layout, batch_size)
    limit = state.max_context
    encoded = []
    for i, q in enumerate(questions):
        ids = decoder._encode(state.prompt(q))
        budget = None if limit is None else limit - params.max_new_tokens
        if budget is not None and budget < 1:
            raise ConfigError(f"max_new_tokens={params.max_new_tokens} leaves no room for a prompt in the model's context ({limit})")
        cut = max_context_check(len(ids), len(ids), budget, on_long, f"question {i}")
        encoded.append(ids[cut:])
    row_seeds = list(seeds) if seeds is not None else [row_seed(seed, i, 0) for i in range(len(questions))]
    decoded: list[_Decoded | None] = [None] * len(questions)
    order = sorted(range(len(questions)), key=lambda i: -len(encoded[i]))
    with ExitStack() as stack, torch.inference_mode():
        if float(alpha) != 1.0:
            stack.enter_context(scale_neurons(loaded.layout, state.h_neurons, alpha))
        for b in range(0, len(order), batch_size):
            batch = order[b:b + batch_size]
            got = decoder.run([encoded[i] for i in batch], [row_seeds[i] for i in batch], params, state.record)
            for i, d in zip(batch, got):
                decoded[i] = d
    results: list[dict[str, Any]] = []
    x_rows, scored = [], []
    for i, d in enumerate(decoded):
        assert d is not None
        gen = d.generation
        out: dict[str, Any] = {"question": questions[i], "answer": gen.text, "response": gen.text,
                               "p_hallucination": None, "abstained": False, "alpha": float(alpha),
                               "finish_reason": gen.finish_reason, "prompt_tokens": d.prompt_len,
                               "completion_tokens": len(gen.token_ids), "span": None, "span_status": "ok",
                               "top_neurons": []}
        results.append(out)
        span = _response_span(state, questions[i], gen.token_ids)
        if span is None:
            out["span_status"] = "empty response" if not gen.token_ids else "response has only whitespace/punctuation tokens"
            continue
        s, e = span
        vals = d.cett[s:e].astype(np.float64)
        if not np.isfinite(vals).all():  # cannot happen: every answer token is fed once
            raise StageError("internal error: an answer token's activations were not recorded")
        out["span"] = {"start": d.prompt_len + s, "end": d.prompt_len + e,
                       "text": tok.decode(list(gen.token_ids[s:e]), skip_special_tokens=True).strip()}
        x_rows.append(vals.mean(axis=0) if vals.shape[1] else np.zeros(0))
        scored.append(i)
    if scored:
        p, tops = apply_probe(state, np.stack(x_rows).reshape(len(scored), len(state.record)))
        for row, i in enumerate(scored):
            results[i]["p_hallucination"] = float(p[row])
            results[i]["top_neurons"] = tops[row]
            if abstain_above is not None and p[row] > abstain_above:
                results[i]["answer"] = ABSTAIN_TEXT
                results[i]["abstained"] = True
    return results
