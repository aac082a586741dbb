"""The intervention benchmarks, one module each, behind one registry.

``intervene.benchmarks`` picks from :data:`BENCHMARKS`; a new benchmark is a module with a
``BENCHMARK`` (:class:`~hneurons.intervention.base.Benchmark`) registered here or by
:func:`register_benchmark`. :class:`~hneurons.intervention.judge.Judge` is re-exported because
``hneurons judge`` applies the same verdicts to a file.
"""

from __future__ import annotations

from hneurons.intervention import faitheval, falseqa, jailbreak, qa, sycophancy
from hneurons.intervention.base import Benchmark, GenerateFn, Item, ItemResult
from hneurons.intervention.judge import Judge
from hneurons.registry import Registry

__all__ = ["BENCHMARKS", "Benchmark", "GenerateFn", "Item", "ItemResult", "Judge", "get_benchmark",
           "register_benchmark"]

BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def register_benchmark(bench: Benchmark) -> Benchmark:
    """Add (or replace) a benchmark."""
    return BENCHMARKS.register(bench.name, bench)


def get_benchmark(name: str) -> Benchmark:
    """A registered benchmark, or a ConfigError listing the known ones."""
    return BENCHMARKS.get(name, "intervene.benchmarks")


for _module in (falseqa, faitheval, sycophancy, jailbreak, qa):
    register_benchmark(_module.BENCHMARK)
