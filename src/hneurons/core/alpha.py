"""The one α check: a neuron scale factor is a finite number ≥ 0 (1 = no change, 0 = silence).

α multiplies the H-Neurons' activations (the paper, arXiv 2512.01797 §6.2.1 Eq. 5). Every place
that takes an α (the hooks, ``intervene.alphas``, ``--alpha`` of ``generate``/``serve``, guarded
generation) checks it here, so a bad value gets one wording whatever the door. The module imports
nothing heavy, so the config and the CLI can check α before torch or a model loads;
:mod:`hneurons.core.hooks` re-exports :func:`check_alpha` beside the hooks that use it.
"""

from __future__ import annotations

import math
import numbers

from hneurons.errors import ConfigError


def check_alpha(value: object, where: str) -> float:
    """``value`` as a float when it is a usable α, else a :class:`ConfigError` naming ``where``.

    ``where`` is what the user typed or set (``"--alpha"``, ``"intervene.alphas"``, ``"alpha"``).
    Booleans and strings are refused: ``True`` or ``"0.5"`` as an α is a mistake upstream.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    a = float(value) if ok else math.nan  # type: ignore[arg-type]
    if not (math.isfinite(a) and a >= 0):
        raise ConfigError(f"{where} must be a finite number ≥ 0 (1 = no change, 0 = silence the neurons), got {value!r}")
    return a
