"""hneurons: find, test and use hallucination-associated neurons (H-Neurons) in causal LMs.

Everything the CLI does is a plain Python call::

    import hneurons
    m = hneurons.load_model()                      # embedded SmolLM2-135M-Instruct, or a path
    with hneurons.scale_neurons(m.layout, [123, 4567], alpha=0.0):
        ...                                        # any forward / generate with those neurons silenced
    probe = hneurons.HNeuronProbe(C=1.0).fit(X, y)
    hneurons.run_all(hneurons.load_config("smoke"), "runs/smoke")

Names are imported lazily so ``import hneurons`` stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "hneurons.core.models",
    "LoadedModel": "hneurons.core.models",
    "resolve": "hneurons.core.arch",
    "ARCHITECTURES": "hneurons.core.arch",
    "capture_cett": "hneurons.core.hooks",
    "record_cett": "hneurons.core.hooks",
    "scale_neurons": "hneurons.core.hooks",
    "scale_down_weights": "hneurons.core.hooks",
    "extract_cett": "hneurons.core.features",
    "FeatureStore": "hneurons.core.store",
    "HNeuronProbe": "hneurons.probe.estimator",
    "load_dataset": "hneurons.data",
    "load_config": "hneurons.config",
    "Config": "hneurons.config",
    "run_all": "hneurons.pipeline",
    "run_stage": "hneurons.pipeline",
    "Context": "hneurons.pipeline",
    "write_report": "hneurons.report",
    "score": "hneurons.apply.score",
    "guarded_generate": "hneurons.apply.guard",
    "HNeuronsError": "hneurons.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hneurons' has no attribute {name!r}")
