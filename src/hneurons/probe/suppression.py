"""TriviaQA accuracy with neurons scaled: the "functional safety" term of the probe's C rule.

the paper, arXiv 2512.01797, §6.1.3 picks the probe's C by held-out accuracy + the model's TriviaQA accuracy when the
selected H-Neurons are suppressed (α = 0). A C that selects too many neurons breaks the model,
and this number falls; the probe stage calls :func:`suppression_accuracy` once per C.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from hneurons.config import PAPER_SUFFIX
from hneurons.data import Record
from hneurons.errors import DataError
from hneurons.core.generation import HFBackend, SamplingParams
from hneurons.core.hooks import scale_neurons
from hneurons.judges.rules import rule_judge
from hneurons.core.models import LoadedModel
from hneurons.text.prompts import render_prompt, user_text


def suppression_accuracy(
    loaded: LoadedModel,
    questions: Sequence[Record],
    neurons: Iterable[int] | np.ndarray,
    alpha: float = 0.0,
    max_new_tokens: int = 32,
    batch_size: int = 16,
    chat: bool | None = None,
) -> float:
    """Greedy TriviaQA accuracy (rule judge) with ``neurons`` (flat indices) scaled by ``alpha``.

    Prompt: ``"{question} Respond with the answer only, without any explanation."`` through the
    chat template (``chat=None``: when the tokenizer has one, else the plain base-model format).
    An empty neuron set means nothing to suppress: the unmodified model's accuracy is returned.
    """
    if not questions:
        raise DataError("suppression_accuracy needs at least one TriviaQA question")
    missing = [q.id for q in questions if not q.answers]
    if missing:
        raise DataError(f"suppression_accuracy: question {missing[0]!r} has no gold answers to judge against")
    use_chat = loaded.has_chat_template if chat is None else chat
    prompts = [render_prompt(loaded.tokenizer, user_text(q.question, PAPER_SUFFIX), chat=use_chat) for q in questions]
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    backend = HFBackend(loaded.model, loaded.tokenizer, batch_size=batch_size)
    flat = list(np.asarray(list(neurons) if not isinstance(neurons, np.ndarray) else neurons).ravel())
    if flat:
        with scale_neurons(loaded.layout, flat, alpha):
            gens = backend.generate(prompts, params, progress=False)
    else:
        gens = backend.generate(prompts, params, progress=False)
    correct = sum(rule_judge(g[0].text, q.answers, q.question) for q, g in zip(questions, gens))
    return correct / len(questions)
