"""Bootstrap stability of the H-neuron set at a fixed C."""

from __future__ import annotations

from typing import Any

import numpy as np

from hneurons.errors import ConfigError
from hneurons.probe.design import as_matrix
from hneurons.probe.estimator import HNeuronProbe


def selection_stability(X: Any, y: Any, C: float, n_resamples: int = 10, seed: int = 0,
                        groups: Any = None, **kw: Any) -> dict:
    """Bootstrap refits at fixed C: how reproducible is the H-neuron set?

    Resampling is done with integer sample weights (bootstrap multiplicities), so rows are never
    copied; with ``groups`` whole questions are resampled (their answer and other rows together),
    otherwise rows are resampled within each class. Returns the mean/sd pairwise Jaccard of the
    positive sets, the per-neuron selection frequency of every ever-selected neuron, and the
    frequency of each neuron of the full-data fit.
    """
    if n_resamples < 2:
        raise ConfigError(f"n_resamples={n_resamples} must be >= 2 to compare selections")
    X = as_matrix(X)
    yv = np.asarray(y)
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    full = HNeuronProbe(C=C, **kw).fit(X, yv)
    sets: list[set[int]] = []
    counts: dict[int, int] = {}
    for _ in range(n_resamples):
        wts = np.zeros(n)
        if groups is not None:
            g = np.asarray(groups)
            uniq, inv = np.unique(g, return_inverse=True)
            pick = np.bincount(rng.integers(0, uniq.size, uniq.size), minlength=uniq.size)
            wts = pick[inv].astype(np.float64)
        else:
            for cls in np.unique(yv):
                idx = np.flatnonzero(yv == cls)
                np.add.at(wts, idx[rng.integers(0, idx.size, idx.size)], 1.0)
        pr = HNeuronProbe(C=C, **kw).fit(X, yv, sample_weight=wts, warm_start=(full.coef_, full.intercept_))
        pos = set(np.flatnonzero(pr.coef_ > 0).tolist())
        sets.append(pos)
        for f in pos:
            counts[f] = counts.get(f, 0) + 1
    jac = []
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            u = sets[i] | sets[j]
            jac.append(len(sets[i] & sets[j]) / len(u) if u else 1.0)
    freq = {int(f): c / n_resamples for f, c in sorted(counts.items(), key=lambda t: (-t[1], t[0]))}
    full_pos = np.flatnonzero(full.coef_ > 0)
    return {
        "C": float(C),
        "n_resamples": int(n_resamples),
        "mean_jaccard": float(np.mean(jac)),
        "sd_jaccard": float(np.std(jac)),
        "n_positive": [len(s) for s in sets],
        "selection_frequency": freq,
        "full_fit_frequency": {int(f): freq.get(int(f), 0.0) for f in full_pos},
    }
