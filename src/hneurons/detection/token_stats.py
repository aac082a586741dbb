"""Training-free scores of an answer: log-probability, entropy, length, residual stream, span shape.

The baselines the H-Neuron probe is compared with need per-item statistics of the answer tokens;
the CETT pass stores them as it goes (:data:`hneurons.core.features.STATS`), and
:func:`token_stats` puts them together with the response length and the span's shape (the leak
guard: if the span's shape alone detects hallucinations, the span rule knows the label).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hneurons.core.features import FeatureItem
from hneurons.errors import StageError


@dataclass
class TokenStats:
    """Per item: mean answer-token log-probability and predictive entropy, response length in
    tokens, the residual stream averaged over the answer tokens (``[n, d_model]``) and the span's
    shape (``[n, 3]``: span tokens, span/response token ratio, span start offset in the response) —
    the last two are leak guards: if they detect hallucinations, the span rule knows the label."""

    logprob: np.ndarray
    entropy: np.ndarray
    length: np.ndarray
    residual: np.ndarray
    residual_layer: int
    span_shape: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))


def span_shape(items: Sequence[FeatureItem]) -> np.ndarray:
    """``[n, 3]``: answer-span tokens, span/response token ratio, span start − response start."""
    out = np.zeros((len(items), 3), dtype=np.float64)
    for i, it in enumerate(items):
        a0, a1 = it.answer
        r0, r1 = it.response
        out[i] = (a1 - a0, (a1 - a0) / max(1, r1 - r0), a0 - r0)
    return out


def token_stats(items: Sequence[FeatureItem], residual_layer: int, arrays: dict[str, np.ndarray]) -> TokenStats:
    """:class:`TokenStats` of ``items`` from the statistics their CETT pass stored
    (:meth:`hneurons.core.store.FeatureStore.load_stats`, rows in ``items`` order)."""
    n = len(items)
    if any(len(arrays[k]) != n for k in ("logprob", "entropy", "residual")):
        raise StageError(f"stored token statistics cover {len(arrays['logprob'])} items, not {n}; "
                         "re-run the stage with --force")
    length = np.array([it.response[1] - it.response[0] for it in items], dtype=np.float64)
    return TokenStats(arrays["logprob"].astype(np.float64), arrays["entropy"].astype(np.float64), length,
                      arrays["residual"].astype(np.float32), residual_layer, span_shape(items))
