"""Origin analysis (PAPER.md §7): how much each neuron changed from base to instruct, and whether
the instruct probe still detects hallucinations from the base model's activations.

Parameter drift (§7.2). For neuron j of a layer, its input weights are row j of W_up and its
output weights are column j of W_down. Per neuron::

    drift_up   = 1 − cos(W_up_base[j, :],   W_up_inst[j, :])
    drift_down = 1 − cos(W_down_base[:, j], W_down_inst[:, j])
    drift      = (z(drift_up) + z(drift_down)) / 2

z-scored over all neurons (or per layer), ranked descending (rank 0 = largest change) and
normalised to [0, 1]. The gate projection is measured too but kept out of the combined score, as
in the paper. Checkpoints are compared one layer at a time: :func:`neuron_drift_from_files` reads
only the tensors of the current layer from the safetensors shards, so two 70B checkpoints never
sit in memory together.

Backward transfer (§7.1). The base model answers ``"{question}\\nAnswer:"`` (no chat template,
stop at the first newline); its answers are judged and balanced like the detection sets, its own
CETT features are computed, and the instruct probe is applied unchanged (AUROC, since activation
scales shift between the two models).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from scipy import stats as _sps

from hneurons.core.arch import Arch, arch_for
from hneurons.data.registry import Record
from hneurons.detection.methods import EvalSet, TrainData, judge_response, random_neuron_draws, refit_columns, score_metrics
from hneurons.errors import ConfigError, DataError, ModelLoadError
from hneurons.core.features import FeatureItem
from hneurons.probe.estimator import HNeuronProbe
from hneurons.text.locator import span_by_config
from hneurons.text.spans import SpanFailure, build_sequence
from hneurons.stats import welch_t_one_sided

SCOPES = ("global", "per_layer")
HIST_BINS = 20
_ROW_CHUNK = 4096  # rows per float64 block: bounds the extra memory per layer to a few hundred MB


# ---------------------------------------------------------------------------------------------
# Weight sources: a loaded model's Layout, or tensors read lazily from safetensors shards
# ---------------------------------------------------------------------------------------------


class WeightSource(Protocol):
    """What drift needs from a model: sizes and per-layer FFN weights in canonical orientation.

    :class:`hneurons.core.arch.Layout` satisfies it for loaded models; :class:`SafetensorsWeights`
    for checkpoint directories read tensor by tensor.
    """

    model_type: str
    n_layers: int
    d_ff: int
    d_model: int

    def up_weight(self, layer: int) -> torch.Tensor: ...  # [d_ff, d_model]

    def down_weight(self, layer: int) -> torch.Tensor: ...  # [d_model, d_ff]

    def gate_weight(self, layer: int) -> torch.Tensor | None: ...  # [d_ff, d_model] or None


def _config_value(cfg: dict[str, Any], *names: str) -> Any:
    """First present key among ``names`` in a config dict or its ``text_config``."""
    for source in (cfg.get("text_config") or {}, cfg):
        for n in names:
            if source.get(n) is not None:
                return source[n]
    return None


class SafetensorsWeights:
    """FFN weights of a Hugging Face checkpoint directory, read one tensor at a time.

    Tensor names come from the adapter row (``layers`` path + ``down_proj``/``up_proj``/
    ``gate_proj``); a checkpoint may store them with or without the leading wrapper names
    (GPT-2 hub checkpoints have ``h.0.mlp.c_fc.weight``), so every suffix of the layer path is
    tried. Use as a context manager so the shard files are closed afterwards.
    """

    def __init__(self, directory: str | Path) -> None:
        from safetensors import safe_open

        self.directory = Path(directory)
        cfg_path = self.directory / "config.json"
        if not cfg_path.is_file():
            raise ModelLoadError(f"{self.directory} has no config.json; pass a Hugging Face model directory")
        try:
            self.config: dict[str, Any] = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"{cfg_path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
        self.model_type = str(self.config.get("model_type") or "")
        self.arch: Arch = arch_for(self.model_type)
        if self.arch.is_moe:
            raise ModelLoadError(
                f"{self.directory}: drift from files does not read mixture-of-experts checkpoints "
                f"({self.model_type}); load both models and call hneurons.origin.analysis.neuron_drift on their layouts"
            )
        self._safe_open = safe_open
        self._key_to_file = self._weight_map()
        self._stack = ExitStack()
        self._handles: dict[str, Any] = {}
        self._prefix = self._find_prefix()
        down0 = self._raw(0, self.arch.down_proj)
        d0, d1 = down0.shape
        self.d_model, self.d_ff = (int(d0), int(d1)) if self.arch.weight_layout == "out_in" else (int(d1), int(d0))
        n = _config_value(self.config, "num_hidden_layers", "n_layer")
        if n is None:
            raise ModelLoadError(f"{cfg_path} has neither num_hidden_layers nor n_layer")
        self.n_layers = int(n)
        last = f"{self._prefix}{self.n_layers - 1}.{self.arch.down_proj}.weight"
        if last not in self._key_to_file:
            raise ModelLoadError(f"{self.directory}: config says {self.n_layers} layers but tensor {last!r} is missing")

    def _weight_map(self) -> dict[str, str]:
        index = self.directory / "model.safetensors.index.json"
        if index.is_file():
            try:
                return dict(json.loads(index.read_text())["weight_map"])
            except (json.JSONDecodeError, KeyError):
                raise ModelLoadError(f"{index} is not a safetensors index (no weight_map)") from None
        single = self.directory / "model.safetensors"
        if not single.is_file():
            shards = sorted(self.directory.glob("*.safetensors"))
            if len(shards) != 1:
                raise ModelLoadError(
                    f"{self.directory} has no model.safetensors(.index.json); drift from files needs "
                    "safetensors weights (load .bin or GGUF checkpoints and use neuron_drift instead)"
                )
            single = shards[0]
        with self._safe_open(str(single), framework="pt") as fh:
            return {k: single.name for k in fh.keys()}

    def _find_prefix(self) -> str:
        for path in self.arch.layers:
            parts = path.split(".")
            for i in range(len(parts)):
                prefix = ".".join(parts[i:]) + "."
                if f"{prefix}0.{self.arch.down_proj}.weight" in self._key_to_file:
                    return prefix
        raise ModelLoadError(
            f"{self.directory}: no tensor named like {self.arch.layers[0]}.0.{self.arch.down_proj}.weight; "
            f"the checkpoint does not match the {self.model_type!r} adapter row in hneurons.core.arch"
        )

    def _raw(self, layer: int, module: str) -> torch.Tensor:
        key = f"{self._prefix}{layer}.{module}.weight"
        file = self._key_to_file.get(key)
        if file is None:
            raise ModelLoadError(f"{self.directory}: tensor {key!r} is missing from the checkpoint")
        if file not in self._handles:
            self._handles[file] = self._stack.enter_context(
                self._safe_open(str(self.directory / file), framework="pt")
            )
        return self._handles[file].get_tensor(key)

    def _oriented(self, layer: int, module: str) -> torch.Tensor:
        w = self._raw(layer, module)
        return w if self.arch.weight_layout == "out_in" else w.t()

    def up_weight(self, layer: int) -> torch.Tensor:
        w = self._oriented(layer, self.arch.up_proj)
        return w[-self.d_ff:] if w.shape[0] == 2 * self.d_ff else w

    def down_weight(self, layer: int) -> torch.Tensor:
        return self._oriented(layer, self.arch.down_proj)

    def gate_weight(self, layer: int) -> torch.Tensor | None:
        if self.arch.gate_proj is not None:
            return self._oriented(layer, self.arch.gate_proj)
        w = self._oriented(layer, self.arch.up_proj)
        return w[: self.d_ff] if w.shape[0] == 2 * self.d_ff else None

    def close(self) -> None:
        self._stack.close()
        self._handles.clear()

    def __enter__(self) -> SafetensorsWeights:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_compatible(instruct: WeightSource, base: WeightSource) -> None:
    """Refuse pairs whose neurons do not correspond one to one (message names both values)."""
    for what, a, b in (
        ("architecture (model_type)", instruct.model_type, base.model_type),
        ("number of layers", instruct.n_layers, base.n_layers),
        ("neurons per layer (d_ff)", instruct.d_ff, base.d_ff),
        ("hidden size (d_model)", instruct.d_model, base.d_model),
    ):
        if a != b:
            raise ConfigError(
                f"origin.base_model does not match the instruct model: {what} is {b!r} for the base "
                f"model but {a!r} for the instruct model; pass the base checkpoint the instruct model "
                "was fine-tuned from"
            )


def tokenizer_difference(instruct_tok: Any, base_tok: Any) -> str | None:
    """A one-line description of how two tokenizers' vocabularies differ, or None if identical.

    Instruct models often add chat special tokens, which is harmless for plain-text prompting;
    the stage warns rather than refuses.
    """
    va, vb = instruct_tok.get_vocab(), base_tok.get_vocab()
    if va == vb:
        return None
    only_a = len(set(va) - set(vb))
    only_b = len(set(vb) - set(va))
    moved = sum(1 for t in set(va) & set(vb) if va[t] != vb[t])
    return (f"tokenizers differ: instruct vocab {len(va)}, base vocab {len(vb)} "
            f"({only_a} tokens only in instruct, {only_b} only in base, {moved} shared tokens with other ids)")


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
    for layer in tqdm(range(L), desc="drift", unit="layer", disable=not progress):
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


# ---------------------------------------------------------------------------------------------
# Backward transfer
# ---------------------------------------------------------------------------------------------


@dataclass
class BaseItem:
    """One judged base-model answer and, when located, its answer span (token range)."""

    qid: str
    question: str
    response: str
    verdict: str
    label: int | None  # 1 = hallucinated, 0 = faithful, None = dropped (refusal / no answer / judge error)
    span_start: int = -1
    span_end: int = -1
    span_status: str = "not located"
    feature: FeatureItem | None = None

    def row(self) -> dict[str, Any]:
        return {"qid": self.qid, "question": self.question, "response": self.response, "verdict": self.verdict,
                "label": self.label, "span_start": self.span_start, "span_end": self.span_end,
                "span_status": self.span_status}


def judge_and_locate(tokenizer: Any, eval_set: EvalSet, records: Sequence[Record], responses: Sequence[str],
                     refusal_phrases: Sequence[str], span_method: str = "phrase",
                     span_llm: Any = None) -> list[BaseItem]:
    """Label base-model answers and find their answer spans in the plain-text sequence.

    Judging is the detection stage's (:func:`hneurons.detection.methods.judge_response`: paper refusal filter,
    then whole-word alias match); the span comes from the same label-blind locator as training
    (:func:`hneurons.text.locator.span_by_config` with ``span_method``), located by character offsets in
    ``"{question}\\nAnswer: {response}"``. Items whose span cannot be located keep
    ``feature=None`` and the reason in ``span_status``.
    """
    if len(records) != len(responses):
        raise DataError(f"{len(records)} questions but {len(responses)} responses; they must be aligned")
    out = []
    for rec, text in zip(records, responses):
        v = judge_response(eval_set, rec.question, text, rec.answers, refusal_phrases)
        item = BaseItem(rec.id, rec.question, text, v.verdict, v.label)
        if v.label is None:
            item.span_status = f"dropped ({v.verdict})"
            out.append(item)
            continue
        seq = build_sequence(tokenizer, rec.question.strip(), text, chat=False)
        span = span_by_config(seq, rec.question, span_method, span_llm, v.answer)
        if isinstance(span, SpanFailure):
            item.span_status = span.reason
        else:
            item.span_start, item.span_end, item.span_status = span.start, span.end, "ok"
            item.feature = FeatureItem(rec.id, tuple(seq.input_ids), (span.start, span.end),
                                       (seq.prompt_end, seq.response_end))
        out.append(item)
    return out


def transfer_scores(probe: HNeuronProbe, X: np.ndarray) -> np.ndarray:
    """P(hallucinated) from the instruct probe applied unchanged to base-model features
    (same θ, intercept and feature indexing; no refit, no re-standardisation; PAPER.md §7.1)."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != probe.n_features_in_:
        raise DataError(f"base-model features have shape {X.shape} but the instruct probe has "
                        f"{probe.n_features_in_} weights; the two models' neuron layouts differ")
    if not np.isfinite(X).all():
        raise DataError("base-model features contain NaN/inf (an empty answer span?); drop those items first")
    return probe.predict_proba(X)[:, 1]


def random_transfer_scores(train: TrainData, X: np.ndarray, h_idx: Sequence[int] | np.ndarray,
                           draws: int, seed: int) -> np.ndarray:
    """``[n, draws]`` scores of random-neuron probes fitted on the instruct training features and
    applied unchanged to base features: k = #H-Neurons random neurons (H-Neurons excluded), refit
    exactly like the detection stage's random baseline (:func:`hneurons.detection.methods.refit_columns`)."""
    h = np.asarray(h_idx, dtype=np.int64)
    cols = random_neuron_draws(train.answer.shape[1], int(h.size), h, draws, seed)
    X = np.asarray(X, dtype=np.float64)
    return np.column_stack([refit_columns(train, c).predict_proba(X[:, c])[:, 1] for c in cols])


def transfer_summary(y: Sequence[int], h_scores: np.ndarray, random_scores: np.ndarray | None,
                     n_boot: int, seed: int) -> dict[str, Any]:
    """``origin.json`` transfer entry of one set: AUROC/accuracy (p > 0.5) with bootstrap CIs for
    the transferred probe, and the same for the random-neuron control (mean over draws)."""
    yy = np.asarray(y, dtype=np.int64)
    m = score_metrics(yy, h_scores, 0.5, n_boot, seed)
    out: dict[str, Any] = {
        "auroc": m["auroc"], "auroc_ci": m["auroc_ci"], "accuracy": m["accuracy"], "accuracy_ci": m["accuracy_ci"],
        "accuracy_prevalence": m["accuracy_prevalence"], "n": int(yy.size),
        "n_per_class": {"0": int((yy == 0).sum()), "1": int((yy == 1).sum())},
        "random_auroc": None, "random": None,
    }
    if random_scores is not None:
        r = score_metrics(yy, random_scores, 0.5, n_boot, seed)
        out["random_auroc"] = r["auroc"]
        out["random"] = {k: r[k] for k in ("auroc", "auroc_ci", "auroc_sd", "accuracy", "accuracy_ci", "draws") if k in r}
    return out
