"""hneurons: find, test and use hallucination-associated neurons (H-Neurons) in causal LMs.

Everything the CLI does is a plain Python call::

    import hneurons
    m = hneurons.load_model()                      # embedded SmolLM2-135M-Instruct, or a path
    X = hneurons.cett(m, [("Who wrote Hamlet?", "William Shakespeare."),
                          ("Who wrote Hamlet?", "Charles Dickens.")])  # [2, n_neurons] answer CETT
    with hneurons.scale_neurons(m.layout, [123, 4567], alpha=0.0):
        ...                                        # any forward / generate with those neurons silenced
    hneurons.run_all(hneurons.load_config("smoke"), "runs/smoke")
    hneurons.score("runs/smoke", [{"question": "Who wrote Hamlet?", "answer": "Charles Dickens"}])

``hneurons.cett`` renders each (question, answer) pair and locates its answer span exactly as the
pipeline does, so its rows are what a fitted :class:`HNeuronProbe` reads. Names are imported
lazily so ``import hneurons`` stays cheap for the CLI; ``dir(hneurons)`` lists them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "hneurons.core.models",
    "LoadedModel": "hneurons.core.models",
    "resolve": "hneurons.core.arch",
    "neuron_label": "hneurons.core.arch",
    "ARCHITECTURES": "hneurons.core.arch",
    "capture_cett": "hneurons.core.hooks",
    "record_cett": "hneurons.core.hooks",
    "scale_neurons": "hneurons.core.hooks",
    "scale_down_weights": "hneurons.core.hooks",
    "cett": "hneurons.core.features",
    "extract_cett": "hneurons.core.features",
    "ExtractOptions": "hneurons.core.features",
    "FeatureItem": "hneurons.core.features",
    "FeatureStore": "hneurons.core.store",
    "HFBackend": "hneurons.core.generation",
    "SamplingParams": "hneurons.core.generation",
    "render_prompt": "hneurons.text.prompts",
    "user_text": "hneurons.text.prompts",
    "HNeuronProbe": "hneurons.probe.estimator",
    "load_dataset": "hneurons.data",
    "load_config": "hneurons.config",
    "Config": "hneurons.config",
    "run_all": "hneurons.pipeline",
    "run_stage": "hneurons.pipeline",
    "Context": "hneurons.pipeline",
    "write_report": "hneurons.report",
    "score": "hneurons.apply.score",
    "load_state": "hneurons.apply.state",
    "guarded_generate": "hneurons.apply.guard",
    "GuardOptions": "hneurons.apply.guard",
    "HNeuronsError": "hneurons.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hneurons' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public API (what tab completion in a notebook offers), not this module's own imports."""
    return sorted([*_EXPORTS, "__version__"])
