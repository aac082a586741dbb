"""What answers a batch of requests: the local guarded decode loop, or an OpenAI-compatible upstream.

:class:`LocalEngine` runs :func:`~hneurons.apply.guard.guarded_generate` once per group, with an
observer on the package's decode loop (:mod:`hneurons.core.steps`) that streams each row's text as
it is decoded and stops the rows whose client has gone. :class:`UpstreamEngine` has vLLM (or any
OpenAI-compatible server the operator names) write the answers and scores each with one forward
pass of the local model (:func:`~hneurons.apply.score.score`: the same prompt, the same span
locator, the same probe), so guarding works where hooks cannot run inside the generator.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from dataclasses import dataclass
from typing import Any

from hneurons.apply.guard import GuardOptions, guarded_generate
from hneurons.apply.score import score
from hneurons.apply.server.worker import Job
from hneurons.apply.state import ABSTAIN_TEXT, ScoringState
from hneurons.core.generation import Generation, SamplingParams, cut_at_stop
from hneurons.core.steps import DecodeStep
from hneurons.errors import ConfigError, DataError
from hneurons.text.spans import add_special_tokens_for


class StreamText:
    """One row's text deltas; their concatenation is the row's final (stripped, stop-cut) answer.

    Leading whitespace is never sent and trailing whitespace, a stop string and a half-decoded
    character (U+FFFD) are held back until more text follows, so nothing streamed has to be taken
    back (the final chunk carries what the final answer adds to what was sent).
    """

    def __init__(self, tokenizer: Any, stop: tuple[str, ...]) -> None:
        self.tokenizer, self.stop = tokenizer, stop
        self.ids: list[int] = []
        self.sent = ""

    def feed(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = cut_at_stop(text, self.stop)
        safe = (text if cut is None else text[:cut]).strip().rstrip("\ufffd").rstrip()
        if not safe.startswith(self.sent):
            return ""  # decoding more tokens changed earlier text: wait for the final answer
        delta, self.sent = safe[len(self.sent):], safe
        return delta


def prompt_tokens(state: ScoringState, question: str) -> int:
    """Length of the rendered prompt in tokens, as the decode loop will feed it."""
    prompt = state.prompt(question)
    tok = state.loaded.tokenizer
    return len(tok(prompt, add_special_tokens=add_special_tokens_for(tok, prompt))["input_ids"])


@dataclass(frozen=True)
class Limits:
    """Prompt-length limit: ``max_prompt_tokens``, else the model's context minus the answer's tokens."""

    max_prompt_tokens: int | None = None

    def check(self, state: ScoringState, job: Job) -> None:
        context = state.max_context
        limit = self.max_prompt_tokens
        if context is not None:
            room = context - job.max_tokens
            limit = room if limit is None else min(limit, room)
        if limit is None:
            return
        for q in dict.fromkeys(job.questions):
            n = prompt_tokens(state, q)
            if n > limit:
                raise DataError(f"the prompt is {n} tokens, more than the limit of {limit} tokens (model context "
                                f"{context}, max_tokens {job.max_tokens}, --max-prompt-tokens "
                                f"{self.max_prompt_tokens}); shorten it, nothing is truncated")


def _rows(jobs: list[Job]) -> tuple[list[str], list[int], list[tuple[Job, int]]]:
    questions, seeds, owners = [], [], []
    for j in jobs:
        questions += j.questions
        seeds += j.seeds
        owners += [(j, r) for r in range(len(j.questions))]
    return questions, seeds, owners


def _split(results: list[dict[str, Any]], jobs: list[Job]) -> list[list[dict[str, Any]]]:
    out, at = [], 0
    for j in jobs:
        out.append(results[at:at + len(j.questions)])
        at += len(j.questions)
    return out


class _Observer:
    """Per decode step: stop the rows of cancelled jobs, pass new text of streamed rows to their job."""

    def __init__(self, state: ScoringState, owners: list[tuple[Job, int]]) -> None:
        self.owners = owners
        self.text = [StreamText(state.loaded.tokenizer, state.stop) if j.on_delta else None for j, _ in owners]

    def __call__(self, step: DecodeStep) -> None:
        for row, token in zip(step.rows, step.tokens):
            job, r = self.owners[row]
            if job.cancelled.is_set():
                step.stop(row)
            elif token is not None and self.text[row] is not None:
                delta = self.text[row].feed(token)
                if delta:
                    job.on_delta(r, delta)


class LocalEngine:
    """Guarded generation with the local model (α, recording and scoring in the decode loop)."""

    def __init__(self, state: ScoringState, options: GuardOptions, limits: Limits) -> None:
        if options.alpha != 1.0 and not len(state.h_neurons):
            raise ConfigError("--alpha needs H-Neurons to scale but the probe has no positive weights; use --alpha 1")
        self.state, self.options, self.limits = state, options, limits

    def check(self, job: Job) -> None:
        self.limits.check(self.state, job)

    def run(self, jobs: list[Job], max_tokens: int, temperature: float) -> list[list[dict[str, Any]]]:
        questions, seeds, owners = _rows(jobs)
        opts = dataclasses.replace(self.options, max_new_tokens=max_tokens, temperature=temperature,
                                   batch_size=len(questions), on_long="refuse")
        return _split(guarded_generate(self.state, questions, opts, seeds=seeds, observer=_Observer(self.state, owners)),
                      jobs)


@dataclass(frozen=True)
class Upstream:
    """An OpenAI-compatible ``/v1/completions`` server that writes the answers (vLLM, llama.cpp, TGI…)."""

    url: str
    model: str
    api_key: str | None = None
    max_concurrency: int = 16
    timeout_s: float = 120.0


class UpstreamEngine:
    """Answers from an upstream server, each scored by one forward pass of the local model.

    The upstream gets the prompt the local model would decode from (rendered with the run's
    template, sent to ``/v1/completions`` so it is not templated twice) and a seed per row. The
    answer's score is :func:`~hneurons.apply.score.score`'s: the run's locator picks the span, the
    probe reads the local model's CETT over it. α cannot be applied (the upstream runs no hooks);
    ``completion_tokens`` are counted with the local tokenizer.
    """

    def __init__(self, state: ScoringState, options: GuardOptions, limits: Limits, upstream: Upstream) -> None:
        from hneurons.core.backends import OpenAIBackend

        if options.alpha != 1.0:
            raise ConfigError("--alpha scales neurons inside the generator, which --upstream cannot reach; use --alpha 1")
        self.state, self.options, self.limits = state, options, limits
        self.backend = OpenAIBackend(upstream.url, upstream.model, api_key=upstream.api_key,
                                     max_concurrency=1, timeout_s=upstream.timeout_s, send_top_k=False)
        self.pool = concurrent.futures.ThreadPoolExecutor(upstream.max_concurrency, thread_name_prefix="hneurons-upstream")

    def check(self, job: Job) -> None:
        self.limits.check(self.state, job)

    def _generate(self, question: str, seed: int, max_tokens: int, temperature: float) -> Generation:
        params = SamplingParams(temperature=temperature, max_new_tokens=max_tokens, seed=seed, stop=self.state.stop)
        return self.backend.generate([self.state.prompt(question)], params, progress=False)[0][0]

    def run(self, jobs: list[Job], max_tokens: int, temperature: float) -> list[list[dict[str, Any]]]:
        questions, seeds, _ = _rows(jobs)
        gens = list(self.pool.map(lambda qs: self._generate(qs[0], qs[1], max_tokens, temperature), zip(questions, seeds)))
        scored = score(self.state, [{"question": q, "answer": g.text} for q, g in zip(questions, gens)],
                       batch_size=len(questions))
        tok, results = self.state.loaded.tokenizer, []
        for q, g, s in zip(questions, gens, scored):
            p = s["p_hallucination"]
            abstain = p is not None and self.options.abstain_above is not None and p > self.options.abstain_above
            results.append({"question": q, "answer": ABSTAIN_TEXT if abstain else g.text, "response": g.text,
                            "p_hallucination": p, "abstained": abstain, "alpha": 1.0, "finish_reason": g.finish_reason,
                            "prompt_tokens": prompt_tokens(self.state, q),
                            "completion_tokens": len(tok(g.text, add_special_tokens=False)["input_ids"]),
                            "span": s["span"], "span_status": s["span_status"], "top_neurons": s["top_neurons"]})
        return _split(results, jobs)
