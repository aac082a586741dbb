"""Parameter drift (the paper, arXiv 2512.01797 §7.2): how much each neuron changed, and whether
the H-Neurons changed less than the others.

For neuron j of a layer, its input weights are row j of W_up and its output weights are column j
of W_down. Per neuron::

    drift_up   = 1 − cos(W_up_base[j, :],   W_up_inst[j, :])
    drift_down = 1 − cos(W_down_base[:, j], W_down_inst[:, j])
    drift      = (z(drift_up) + z(drift_down)) / 2

z-scored over all neurons (or per layer), ranked descending (rank 0 = largest change) and
normalised to [0, 1]. The gate projection is measured too but kept out of the combined score, as
in the paper. Models are compared one layer at a time (:mod:`hneurons.origin.weights`), so two
70B checkpoints never sit in memory together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats as _sps

from hneurons.errors import ConfigError, DataError
from hneurons.origin.weights import SafetensorsWeights, WeightSource, check_compatible
from hneurons.stats import welch_t_one_sided

SCOPES = ("global", "per_layer")
HIST_BINS = 20
_ROW_CHUNK = 4096  # rows per float64 block: bounds the extra memory per layer to a few hundred MB


# ---------------------------------------------------------------------------------------------
# Drift
# ---------------------------------------------------------------------------------------------


def cosine_drift(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Row-wise ``1 − cos(a[i], b[i])`` in float64.

    Computed as ``‖â − b̂‖² / 2`` from the normalised rows, which, unlike ``1 − a·b/(‖a‖‖b‖)``,
    keeps full relative precision when the rows are nearly parallel (fine-tuning drifts are often
    1e-4 or smaller). A zero row has no direction: drift 0 when both rows are zero, else 1
    (cos taken as 0). Rows are processed in blocks so only a slice is ever held in float64.
    """
    if a.shape != b.shape:
        raise ConfigError(f"weight shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    out = np.empty(a.shape[0], dtype=np.float64)
    for s in range(0, a.shape[0], _ROW_CHUNK):
        # copy=True: the in-place steps below must never touch the model's own (float64) weights
        x = a[s : s + _ROW_CHUNK].detach().to("cpu", torch.float64, copy=True)
        y = b[s : s + _ROW_CHUNK].detach().to("cpu", torch.float64, copy=True)
        nx = torch.linalg.vector_norm(x, dim=1)
        ny = torch.linalg.vector_norm(y, dim=1)
        x.div_(nx.clamp_min(1e-300).unsqueeze(1))
        x.sub_(y.div_(ny.clamp_min(1e-300).unsqueeze(1)))
        d = 0.5 * torch.linalg.vector_norm(x, dim=1).square()
        zx, zy = nx == 0, ny == 0
        d = torch.where(zx & zy, torch.zeros_like(d), torch.where(zx | zy, torch.ones_like(d), d))
        out[s : s + x.shape[0]] = d.numpy()
    return out


def _zscore(x: np.ndarray, n_layers: int, d_ff: int, scope: str) -> np.ndarray:
    """z-score over all neurons, or within each layer; a constant block gives 0 (no signal)."""
    blocks = x.reshape(1, -1) if scope == "global" else x.reshape(n_layers, d_ff)
    mu = blocks.mean(axis=1, keepdims=True)
    sd = blocks.std(axis=1, keepdims=True)
    z = np.where(sd > 0, (blocks - mu) / np.where(sd > 0, sd, 1.0), 0.0)
    return z.reshape(-1)


@dataclass
class DriftResult:
    """Per-neuron drift, flat index ``layer * d_ff + neuron`` (all arrays length n_layers × d_ff)."""

    n_layers: int
    d_ff: int
    scope: str
    drift_up: np.ndarray
    drift_gate: np.ndarray  # NaN where the FFN has no gate
    drift_down: np.ndarray
    z_up: np.ndarray
    z_down: np.ndarray
    drift: np.ndarray
    rank: np.ndarray  # 0 = largest change; tied drifts share their average rank
    norm_rank: np.ndarray  # rank / (N − 1)

    @property
    def n_neurons(self) -> int:
        return self.n_layers * self.d_ff

    @property
    def gated(self) -> bool:
        return bool(np.isfinite(self.drift_gate).any())

    def table(self, h_idx: Sequence[int] | np.ndarray = ()) -> Any:
        """The ``drift.parquet`` table (pyarrow), with ``is_h`` marking the H-Neurons."""
        import pyarrow as pa

        n = self.n_neurons
        is_h = np.zeros(n, dtype=bool)
        is_h[_check_idx(h_idx, n)] = True
        flat = np.arange(n, dtype=np.int64)
        gate = pa.array(self.drift_gate, mask=~np.isfinite(self.drift_gate))
        return pa.table({
            "layer": (flat // self.d_ff).astype(np.int32),
            "neuron": (flat % self.d_ff).astype(np.int32),
            "drift_up": self.drift_up,
            "drift_gate": gate,
            "drift_down": self.drift_down,
            "z_up": self.z_up,
            "z_down": self.z_down,
            "drift": self.drift,
            "rank": self.rank,
            "norm_rank": self.norm_rank,
            "is_h": is_h,
        })


def drift_from_raw(drift_up: np.ndarray, drift_down: np.ndarray, n_layers: int, d_ff: int,
                   drift_gate: np.ndarray | None = None, scope: str = "global") -> DriftResult:
    """Combine raw per-neuron drifts into z-scores, the combined score and normalised ranks."""
    if scope not in SCOPES:
        raise ConfigError(f"drift scope {scope!r} is not one of {', '.join(SCOPES)}")
    n = n_layers * d_ff
    up = np.asarray(drift_up, dtype=np.float64)
    down = np.asarray(drift_down, dtype=np.float64)
    if up.shape != (n,) or down.shape != (n,):
        raise DataError(f"drift arrays must have {n} entries ({n_layers} layers × {d_ff}), got {up.shape} and {down.shape}")
    gate = np.full(n, np.nan) if drift_gate is None else np.asarray(drift_gate, dtype=np.float64)
    z_up = _zscore(up, n_layers, d_ff, scope)
    z_down = _zscore(down, n_layers, d_ff, scope)
    combined = (z_up + z_down) / 2.0
    rank = _sps.rankdata(-combined, method="average") - 1.0
    norm_rank = rank / (n - 1) if n > 1 else np.zeros(n)
    return DriftResult(n_layers, d_ff, scope, up, gate, down, z_up, z_down, combined, rank, norm_rank)


def neuron_drift(instruct: WeightSource, base: WeightSource, scope: str = "global",
                 progress: bool = False) -> DriftResult:
    """Per-neuron drift between two models with the same layout, one layer at a time.

    Accepts :class:`hneurons.core.arch.Layout` (loaded models, e.g. GGUF pairs) or
    :class:`SafetensorsWeights`; refuses incompatible pairs (:func:`check_compatible`).
    """
    from tqdm.auto import tqdm

    if scope not in SCOPES:
        raise ConfigError(f"drift scope {scope!r} is not one of {', '.join(SCOPES)}")
    check_compatible(instruct, base)
    L, F = instruct.n_layers, instruct.d_ff
    up = np.empty(L * F)
    down = np.empty(L * F)
    gate = np.full(L * F, np.nan)
    for layer in tqdm(range(L), desc="drift", unit="layer", disable=None if progress else True):
        # MoE layers (docs/MOE.md): one row per (expert, j) then shared neurons, as in Layout's flat
        # index; padding slots of narrower layers are "both rows zero", i.e. drift 0.
        width = instruct.width(layer) if hasattr(instruct, "width") else F
        up[layer * F + width:(layer + 1) * F] = 0.0
        down[layer * F + width:(layer + 1) * F] = 0.0
        sl = slice(layer * F, layer * F + width)
        with torch.no_grad():
            up[sl] = cosine_drift(instruct.up_weight(layer), base.up_weight(layer))
            # columns of W_down are rows of its transpose
            down[sl] = cosine_drift(instruct.down_weight(layer).t(), base.down_weight(layer).t())
            gi, gb = instruct.gate_weight(layer), base.gate_weight(layer)
            if gi is not None and gb is not None:
                gate[sl] = cosine_drift(gi, gb)
    return drift_from_raw(up, down, L, F, gate, scope)


def neuron_drift_from_files(instruct_dir: str | Path, base_dir: str | Path, scope: str = "global",
                            progress: bool = False) -> DriftResult:
    """:func:`neuron_drift` straight from two safetensors checkpoint directories (lazy per tensor)."""
    with SafetensorsWeights(instruct_dir) as inst, SafetensorsWeights(base_dir) as base:
        return neuron_drift(inst, base, scope=scope, progress=progress)


# ---------------------------------------------------------------------------------------------
# Significance
# ---------------------------------------------------------------------------------------------


def _check_idx(h_idx: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    idx = np.unique(np.asarray(h_idx, dtype=np.int64).ravel())
    if idx.size and (idx[0] < 0 or idx[-1] >= n):
        bad = idx[0] if idx[0] < 0 else idx[-1]
        raise ConfigError(f"H-Neuron index {bad} is out of range for {n} neurons; was probe/h_neurons.json made for another model?")
    return idx


def _perm_means(norm_rank: np.ndarray, k: int, permutations: int, seed: int) -> np.ndarray:
    """Mean normalised rank of ``permutations`` random neuron sets of size k (without replacement)."""
    rng = np.random.default_rng(seed)
    n = norm_rank.size
    out = np.empty(permutations)
    for i in range(permutations):
        out[i] = norm_rank[rng.choice(n, size=k, replace=False)].mean()
    return out


def drift_test(drift: DriftResult, h_idx: Sequence[int] | np.ndarray, permutations: int = 10_000,
               seed: int = 0) -> dict[str, Any]:
    """Do the H-Neurons drift less (or more) than other neurons?

    * ``t_stat, t_p``: Welch t-test on the combined drift, H vs the other neurons, one-sided with
      the paper's alternative (H drift < others, "parameter inertia"); ``t_p_greater`` and
      ``t_p_two_sided`` are the other alternatives.
    * ``perm_p``: share of random neuron sets of the same size whose mean normalised rank is at
      least the H-Neurons' (the same "drift less" direction; high rank = small change),
      ``perm_p_greater`` the opposite direction and ``perm_p_two_sided`` the distance from the
      null centre. ``(1 + hits) / (1 + permutations)``, so never 0.
    * ``hist``: histogram of normalised ranks of all neurons and of the H-Neurons.
    """
    n = drift.n_neurons
    idx = _check_idx(h_idx, n)
    k = int(idx.size)
    bins = np.linspace(0.0, 1.0, HIST_BINS + 1)
    out: dict[str, Any] = {
        "n_neurons": n, "n_h": k, "scope": drift.scope, "alternative": "less",
        "mean_rank_h": None, "median_rank_h": None, "mean_drift_h": None, "mean_drift_other": None,
        "t_stat": None, "t_df": None, "t_p": None, "t_p_greater": None, "t_p_two_sided": None,
        "perm_p": None, "perm_p_greater": None, "perm_p_two_sided": None,
        "permutations": int(permutations), "note": None,
        "hist": {"variable": "norm_rank", "bins": bins.tolist(),
                 "counts_all": np.histogram(drift.norm_rank, bins)[0].tolist(),
                 "counts_h": np.histogram(drift.norm_rank[idx], bins)[0].tolist()},
    }
    if k == 0:
        out["note"] = "no H-Neurons: nothing to test"
        return out
    mask = np.zeros(n, dtype=bool)
    mask[idx] = True
    h_rank = drift.norm_rank[idx]
    out.update(mean_rank_h=float(h_rank.mean()), median_rank_h=float(np.median(h_rank)),
               mean_drift_h=float(drift.drift[mask].mean()),
               mean_drift_other=float(drift.drift[~mask].mean()) if k < n else None)
    if k >= 2 and n - k >= 2 and (drift.drift[mask].var() > 0 or drift.drift[~mask].var() > 0):
        res = welch_t_one_sided(drift.drift[mask], drift.drift[~mask], alternative="less")
        out.update(t_stat=res.statistic, t_df=res.df, t_p=res.pvalue,
                   t_p_greater=welch_t_one_sided(drift.drift[mask], drift.drift[~mask], "greater").pvalue,
                   t_p_two_sided=welch_t_one_sided(drift.drift[mask], drift.drift[~mask], "two-sided").pvalue)
    else:
        out["note"] = "t-test needs at least 2 H-Neurons, 2 other neurons and some variance"
    if permutations > 0 and k < n:
        means = _perm_means(drift.norm_rank, k, permutations, seed)
        obs = float(h_rank.mean())
        centre = float(drift.norm_rank.mean())
        tol = 1e-12
        out["perm_p"] = float((1 + np.sum(means >= obs - tol)) / (1 + permutations))
        out["perm_p_greater"] = float((1 + np.sum(means <= obs + tol)) / (1 + permutations))
        out["perm_p_two_sided"] = float(
            (1 + np.sum(np.abs(means - centre) >= abs(obs - centre) - tol)) / (1 + permutations))
    return out
