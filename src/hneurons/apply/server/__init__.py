"""An OpenAI-compatible server that answers with guarded generation (``hneurons serve``).

``POST /v1/chat/completions`` and ``POST /v1/completions`` take the OpenAI request shapes (``n``,
``stream``, ``seed``, ``max_tokens``, ``temperature``); the question (the last user message, or the
completion prompt) is rendered with the run's prompt exactly as in training, so its score is
comparable with the probe's. Every reply, and the last chunk of every streamed choice, carries a
``hneurons`` field: ``p_hallucination, alpha, abstained, top_neurons``. An abstained answer's text
is never sent (streaming holds text back while abstention is on). Errors always come in OpenAI's
``{"error": {...}}`` shape.

Modules: :mod:`~.protocol` (wire format), :mod:`~.worker` (bounded queue, batching),
:mod:`~.engines` (local decode loop or an upstream server), :mod:`~.handler` (one request: limits,
waiting, streaming, cancellation), :mod:`~.ops` (API key, request log, metrics), :mod:`~.app`
(routes, model loading, the socket).

Reproducibility: each answer row draws from its own generator seeded by (request seed, prompt,
choice), so a seeded sampled answer does not depend on which other requests share its batch, and
greedy answers do not either — up to the float rounding of the batch's shape, which on a GPU in
bf16 can flip a near-tied token (``benchmarks/agreement.py`` measures how often). docs/SERVING.md.
"""

from __future__ import annotations

from hneurons.errors import MissingExtra

try:  # checked here, so that importing this package says what to install
    import fastapi  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError:
    raise MissingExtra('hneurons serve needs the server packages: pip install "hneurons[serve]"') from None

from hneurons.apply.server.app import ServeOptions, bind_socket, create_app, run_server  # noqa: E402
from hneurons.apply.server.engines import Upstream  # noqa: E402

__all__ = ["ServeOptions", "Upstream", "bind_socket", "create_app", "run_server"]
