"""One step of the decode loop: drawing each row's next token, and telling an observer about it.

:class:`~hneurons.core.generation.HFBackend` is the package's one decode loop. Each step draws one
token per row (:func:`draw_tokens`, every row from its own generator, :func:`row_generators`) and
then calls the caller's :data:`StepObserver` with a :class:`DecodeStep`. Code that needs to act
while the model decodes (guarded generation recording CETT, a server streaming tokens or dropping a
request whose client left) passes an observer to :meth:`~hneurons.core.generation.HFBackend.decode`
instead of copying the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hneurons.core.generation import SamplingParams


@dataclass
class DecodeStep:
    """One step of :class:`HFBackend`'s decode loop, as a :data:`StepObserver` sees it.

    The loop alternates "draw one token per row from the last logits" and "feed those tokens in one
    forward call". The observer is called after each draw:

    * ``index`` 0: the tokens were drawn from the prefill's logits. ``index`` s ≥ 1: they were drawn
      from decode call s, which fed every row in ``rows`` its token s − 1 — so forward hooks that
      ran since the previous step saw exactly those tokens, batch position b being row ``rows[b]``.
      With ``feed_last``, one last call at ``index == max_new_tokens`` feeds the length-cut rows'
      final tokens and draws nothing.
    * ``rows``: batch position → row, the row's index in the prompts given to :meth:`HFBackend.decode`
      (finished rows leave the batch, so positions shift between steps).
    * ``tokens``: per position, the token the row drew and kept now; None when the row had finished
      already, ended now on eos, or nothing was drawn (the ``feed_last`` call).
    * ``done``: per position, whether the row ended at this step (eos, a stop string or the length
      limit); each row is reported done once.

    :meth:`stop` ends rows before the next forward call; their :class:`Generation` keeps what they
    drew so far, with ``finish_reason == "cancelled"``.
    """

    index: int
    rows: list[int]
    tokens: list[int | None]
    done: list[bool]
    stopped: set[int] = field(default_factory=set)

    def stop(self, row: int) -> None:
        """Ask the loop to end ``row`` (an entry of :attr:`rows`) now."""
        self.stopped.add(row)


StepObserver = Callable[[DecodeStep], None]
"""Called by :meth:`HFBackend.decode` after every step; may call :meth:`DecodeStep.stop`.

A server streams each row's tokens to its client as they are decoded and stops the rows whose
client went away (rows index the prompts given to ``decode``)::

    def observer(step: DecodeStep) -> None:
        for row, token, done in zip(step.rows, step.tokens, step.done):
            client = clients[row]
            if client.disconnected:
                step.stop(row)                 # its batch slot and KV cache are freed
            elif token is not None:
                client.send_token(token)       # decode incrementally; Generation.text is the final text
            if done:
                client.finish()

    backend.decode(encoded, seeds, params, observer=observer)

Guarded generation (:mod:`hneurons.apply.guard`) is another observer: it takes the CETT its
:func:`~hneurons.core.hooks.record_cett` hooks recorded during decode call s and files it under
token s − 1 of each row.
"""


@dataclass
class Rows:
    """The decode loop's bookkeeping for one batch: which row sits where and what it produced.

    Private to :class:`~hneurons.core.generation.HFBackend`; it lives here because telling the
    observer about a step is most of what it does.
    """

    ids: list[int]  # row -> its index in the decode() call (what observers are told)
    order: list[int] = field(default_factory=list)  # batch position -> row (shrinks when trimming)
    live: list[bool] = field(default_factory=list)  # per batch position: still generating
    tokens: list[list[int]] = field(default_factory=list)  # per row: the ids drawn (no eos)
    reasons: list[str] = field(default_factory=list)  # per row: why it ended ("length" until it does)
    reported: set[int] = field(default_factory=set)  # rows an observer has been told are done

    def __post_init__(self) -> None:
        n = len(self.ids)
        self.order, self.live = list(range(n)), [True] * n
        self.tokens, self.reasons = [[] for _ in range(n)], ["length"] * n

    def end(self, b: int, reason: str) -> None:
        """Row at batch position ``b`` draws no more tokens."""
        self.live[b], self.reasons[self.order[b]] = False, reason

    def keep_live(self) -> list[int]:
        """Drop finished rows from the batch; returns the batch positions kept (to index the tensors)."""
        keep = [b for b, alive in enumerate(self.live) if alive]
        self.order = [self.order[b] for b in keep]
        self.live = [True] * len(keep)
        return keep

    def notify(self, observer: StepObserver, index: int, kept: list[int | None], final: bool) -> None:
        """Tell the observer about one step and end the rows it stops."""
        done = [(final or not alive) and r not in self.reported for r, alive in zip(self.order, self.live)]
        self.reported.update(r for r, d in zip(self.order, done) if d)
        step = DecodeStep(index, [self.ids[r] for r in self.order], kept, done)
        observer(step)
        for b, r in enumerate(self.order):
            if self.live[b] and self.ids[r] in step.stopped:
                self.end(b, "cancelled")
                self.reported.add(r)


def row_generators(seeds: Sequence[int], device: Any) -> list[Any]:
    """One seeded generator per row, so a row's samples do not depend on its batch."""
    import torch

    out = []
    for seed in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(seed)
        out.append(g)
    return out


def draw_tokens(logits: Any, params: SamplingParams, generators: list[Any]) -> Any:
    """Each row's next token from its float32 logits [rows, vocab]: argmax when greedy, else sampled.

    transformers' own warpers in ``generate``'s order (temperature, top-k, top-p). Top-k is applied
    by keeping the k best logits, so top-p, softmax and the noise work on k entries instead of the
    whole vocabulary (same distribution, barring ties at the k-th logit). The draw is an
    exponential race with one generator per row: argmax(p / E), E ~ Exp(1).
    """
    import torch
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    if params.greedy:
        return logits.argmax(-1)
    logits = TemperatureLogitsWarper(params.temperature)(None, logits)
    candidates = None
    if params.top_k and params.top_k < logits.shape[-1]:
        logits, candidates = torch.topk(logits, params.top_k, dim=-1)
    if params.top_p < 1.0:
        logits = TopPLogitsWarper(params.top_p)(None, logits)
    probs = logits.softmax(-1)
    noise = torch.stack([torch.empty(probs.shape[-1], device=probs.device).exponential_(generator=g) for g in generators])
    choice = (probs / noise).argmax(-1)
    return choice if candidates is None else candidates.gather(-1, choice[:, None])[:, 0]
