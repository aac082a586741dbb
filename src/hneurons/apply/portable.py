"""A portable probe file: everything ``score``, ``generate`` and ``serve`` need, as data that cannot run code.

``hneurons export RUN -o probe.safetensors`` writes one safetensors file (a JSON header and raw
arrays, nothing pickled): the probe's non-zero weights (``neurons`` as flat indices
``layer * d_ff + j``, ``weights``), its ``intercept``, the scaler at those neurons if it has one,
and in the metadata the model fingerprint, ``n_layers`` / ``d_ff``, the prompt format and suffix,
the span method and ``max_new_tokens``. It carries no model path, no remote-code flag and no
endpoint: those stay the caller's (``--model``, ``--trust-remote-code``, ``--set``), as for a run
directory. A sha256 of the arrays in the metadata catches accidental damage; like the stage hashes
it cannot catch a deliberate edit that rewrites it too (docs/SECURITY.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hneurons.apply.state import FittedProbe, check_probe, read_run_probe
from hneurons.errors import DataError, StageError
from hneurons.probe.estimator import HNeuronProbe, read_probe_file
from hneurons.rundir.files import default_file_mode

FORMAT = "hneurons.portable-probe/1"
MAX_NEURONS = 2**27  # flat neuron indices a file may declare (DeepSeek-V3: 61 layers × 256 × 2048 ≈ 3.2e7)
# the recorded settings a probe file carries: how text is prompted and scored, nothing that loads or connects
SETTINGS = {"prompt_format": "model.prompt_format", "suffix": "responses.suffix", "span_method": "spans.method",
            "max_new_tokens": "responses.max_new_tokens"}


def _digest(tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        h.update(f"{name}:{arr.dtype.str}:{arr.shape}\0".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def export_probe(run_dir: str | Path, out: str | Path) -> Path:
    """Write a run's checked probe and its scoring settings into one safetensors file (atomic)."""
    from hneurons.config import load_config
    from safetensors.numpy import save_file

    fitted = read_run_probe(run_dir)
    if not fitted.fingerprint or not fitted.n_layers or not fitted.d_ff:
        raise StageError(f"{fitted.where} records no model fingerprint or layer sizes (probe/h_neurons.json); "
                         f"re-run `hneurons probe {fitted.where} --force` to record them, then export")
    keep = {k: v for k, v in fitted.settings.items() if k in SETTINGS.values()}
    cfg = load_config("paper", overrides=keep)
    p = fitted.probe
    nz = np.flatnonzero(p.coef_)
    tensors = {"neurons": nz.astype(np.int64), "weights": np.asarray(p.coef_, dtype=np.float64)[nz],
               "intercept": np.array([p.intercept_], dtype=np.float64)}
    if hasattr(p, "scaler_mean_"):
        tensors["scaler_mean"] = np.asarray(p.scaler_mean_, dtype=np.float64)[nz]
        tensors["scaler_scale"] = np.asarray(p.scaler_scale_, dtype=np.float64)[nz]
    meta = {"format": FORMAT, "n_layers": fitted.n_layers, "d_ff": fitted.d_ff,
            "n_features": int(p.n_features_in_), "model_fingerprint": fitted.fingerprint,
            "model": fitted.model_label, "C": float(p.C) if isinstance(p.C, (int, float)) else None,
            "exported_from": Path(fitted.where).name,
            "prompt_format": cfg.model.prompt_format, "suffix": cfg.responses.suffix,
            "span_method": cfg.spans.method, "max_new_tokens": cfg.responses.max_new_tokens,
            "sha256": _digest(tensors)}
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"hneurons": json.dumps(meta)})
        os.chmod(tmp, default_file_mode())  # not mkstemp's 0600
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _read_file(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    header, tensors = read_probe_file(path, "export it again")
    try:
        meta = json.loads(header["hneurons"])
    except (KeyError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"probe file {path} is not a portable probe ({FORMAT}); write one with `hneurons export RUN -o FILE`")
    return meta, tensors


def _field(meta: dict[str, Any], key: str, kind: type, path: Path) -> Any:
    value = meta.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise DataError(f"probe file {path}: metadata field {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def _array(tensors: dict[str, np.ndarray], name: str, dtype: Any, k: int | None, path: Path) -> np.ndarray:
    arr = tensors.get(name)
    if arr is None or arr.dtype != dtype or arr.ndim != 1 or (k is not None and arr.shape[0] != k):
        raise DataError(f"probe file {path}: tensor {name!r} is missing or not a 1-D {np.dtype(dtype).name} array"
                        + (f" of length {k}" if k is not None else ""))
    return arr


def read_portable(path: str | Path) -> FittedProbe:
    """A portable probe file, checked field by field (shape, indices, finite weights, sha256)."""
    path = Path(path)
    meta, tensors = _read_file(path)
    n_layers, d_ff = _field(meta, "n_layers", int, path), _field(meta, "d_ff", int, path)
    n = _field(meta, "n_features", int, path)
    if n_layers < 1 or d_ff < 1 or n != n_layers * d_ff or n > MAX_NEURONS:
        raise DataError(f"probe file {path}: n_features {n} is not n_layers {n_layers} × d_ff {d_ff} "
                        f"(at most {MAX_NEURONS}); export it again")
    neurons = _array(tensors, "neurons", np.int64, None, path)
    k = neurons.shape[0]
    if k and (neurons[0] < 0 or neurons[-1] >= n or (np.diff(neurons) <= 0).any()):
        raise DataError(f"probe file {path}: neuron indices must be increasing and in [0, {n}); export it again")
    weights = _array(tensors, "weights", np.float64, k, path)
    intercept = _array(tensors, "intercept", np.float64, 1, path)
    if _digest(tensors) != _field(meta, "sha256", str, path):
        raise DataError(f"probe file {path}: its arrays do not match the sha256 recorded when it was exported "
                        "(damaged or changed since); export it again")
    probe = HNeuronProbe(C=float(meta["C"]) if isinstance(meta.get("C"), (int, float)) else 1.0, d_ff=d_ff)
    probe.coef_ = np.zeros(n)
    probe.coef_[neurons] = weights
    probe.intercept_ = float(intercept[0])
    probe.classes_ = np.array([0, 1])
    probe.n_features_in_ = n
    if "scaler_mean" in tensors or "scaler_scale" in tensors:
        probe.scaler_mean_, probe.scaler_scale_ = np.zeros(n), np.ones(n)
        probe.scaler_mean_[neurons] = _array(tensors, "scaler_mean", np.float64, k, path)
        probe.scaler_scale_[neurons] = _array(tensors, "scaler_scale", np.float64, k, path)
    settings = {key: meta[field] for field, key in SETTINGS.items() if field in meta}
    label = meta.get("model") if isinstance(meta.get("model"), str) else None
    fitted = FittedProbe(probe, str(path), settings, _field(meta, "model_fingerprint", str, path), label,
                         n_layers, d_ff, "export it again with `hneurons export RUN -o FILE`")
    check_probe(fitted)
    return fitted
