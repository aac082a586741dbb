"""An edited checkpoint: a run's neurons scaled by α in ``W_down``, for engines that run no hooks.

Forward hooks do not run inside engines that compile the model or capture CUDA graphs (vLLM;
``torch.compile`` drops them too). Scaling the activation z_j by α before the down projection
(the paper, arXiv 2512.01797 §6) equals scaling column j of ``W_down`` by α, so the α sweep can
run on any engine that serves a checkpoint. :func:`edit_model` writes that checkpoint: the
model as ``transformers`` loads it (a GGUF source de-quantised), with only the chosen columns
scaled (through :func:`~hneurons.core.hooks.scale_down_weights`, the same edit as
``intervene.method = "weights"``), saved as safetensors with its config and tokenizer and an
``hneurons_edit.json`` manifest naming the run, the neurons and α. For α = 0 and 2 the edited
weights give bit-identical logits to the hook (multiplying by 0 or a power of two is exact in
every float format); other α agree to rounding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hneurons.errors import ConfigError

MANIFEST = "hneurons_edit.json"


@dataclass(frozen=True)
class EditRequest:
    """What to write: a run's neurons (``"h"`` or ``"random:SEED"``) scaled by ``alpha`` into ``out``.

    ``model`` is the caller's model (a run directory never chooses the model it loads); None
    means the default model, which must be the run's.
    """

    run_dir: Path
    alpha: float
    out: Path
    neurons: str = "h"
    model: str | None = None


def check_out(out: Path, source: Path) -> None:
    """Refuse an ``--out`` that is a non-empty folder, a file, or the source model (or inside it)."""
    out_r, src_r = out.expanduser().resolve(), source.expanduser().resolve()
    src_dir = src_r if src_r.is_dir() else src_r.parent
    if out_r == src_r or out_r == src_dir or src_dir in out_r.parents:
        raise ConfigError(f"--out {out} is the source model's folder {src_dir}; choose a new, empty folder")
    if out_r.exists() and (not out_r.is_dir() or any(out_r.iterdir())):
        raise ConfigError(f"--out {out} already exists and is not an empty folder; choose a new, empty folder")


def neuron_set(spec: str, h: np.ndarray, n_neurons: int, run_seed: int) -> np.ndarray:
    """The flat neuron indices ``spec`` names: ``h`` (the run's H-Neurons) or ``random:S``, the
    intervene stage's ``random_S`` control (as many neurons as H, drawn from the others)."""
    from hneurons.intervention.sweep import random_sets

    if spec == "h":
        return h
    kind, _, seed = spec.partition(":")
    if kind != "random" or not seed.isdigit():
        raise ConfigError(f"--neurons {spec!r}: choose one of h, random:SEED (e.g. random:0)")
    s = int(seed)
    return random_sets(n_neurons, h, run_seed, s + 1)[f"random_{s}"]


def edit_model(req: EditRequest, log: Any = print) -> Path:
    """Write the edited checkpoint of ``req`` and return its folder (see the module docstring)."""
    from hneurons.core.hooks import check_alpha, scale_down_weights
    from hneurons.core.models import load_model, resolve_model_source
    from hneurons.probe.h_neurons import load_h_neurons
    from hneurons.rundir import RunDir, write_json
    from hneurons.trust import run_config

    alpha = check_alpha(req.alpha, "--alpha")
    cfg = run_config(req.run_dir, {"model.name": req.model} if req.model else {}, note=log)
    source = resolve_model_source(cfg.model.name)
    check_out(req.out, source)
    rd = RunDir(Path(req.run_dir))
    rd.verify("probe")  # h_neurons.json as the probe stage wrote it, or one line naming the damage
    loaded = load_model(cfg.model.name, dtype=cfg.model.dtype, device="cpu", trust_remote_code=False)
    layout = loaded.layout
    h = load_h_neurons(rd.path("probe", "h_neurons.json"), layout.d_ff, layout.n_layers)
    neurons = neuron_set(req.neurons, h, layout.n_neurons, cfg.seed)
    touched = sorted({_param_name(loaded.model, layout, int(n) // layout.d_ff) for n in neurons})
    req.out.mkdir(parents=True, exist_ok=True)
    log(f"edit-model: {len(neurons)} neurons ({req.neurons}) × α = {alpha:g} in {len(touched)} W_down tensors "
        f"of {source.name} → {req.out}")
    with scale_down_weights(layout, neurons, alpha):
        loaded.model.save_pretrained(str(req.out), safe_serialization=True)
    loaded.tokenizer.save_pretrained(str(req.out))
    write_json(req.out / MANIFEST, {
        "run": str(Path(req.run_dir).resolve()), "run_model_fingerprint": loaded.fingerprint,
        "source": str(source), "alpha": alpha, "neurons": req.neurons, "n_neurons": int(len(neurons)),
        "indices": [int(n) for n in neurons], "tensors_scaled": touched, "dtype": str(loaded.model.dtype),
        "note": "only the listed W_down columns differ from the source (a GGUF source is written de-quantised)",
    })
    return req.out


def _param_name(model: Any, layout: Any, layer: int) -> str:
    """The state-dict name of a layer's down projection (an MoE layer: its experts' module)."""
    ex = layout.experts_of(layer)
    target = ex.module if ex is not None and hasattr(ex, "module") else layout.down_projs[layer]
    for name, module in model.named_modules():
        if module is target:
            return name
    return f"layer {layer}"


def read_manifest(path: Path) -> dict[str, Any]:
    """An edited checkpoint's manifest (what it was edited from and how)."""
    return json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))


def alpha_url(template: str, alpha: float) -> str:
    """``intervene.backend_url`` for one α: ``{alpha}`` replaced by α as ``%g`` prints it (``0``, ``2``, ``0.5``)."""
    return template.replace("{alpha}", f"{alpha:g}") if "{alpha}" in template else template


__all__ = ["EditRequest", "MANIFEST", "alpha_url", "check_out", "edit_model", "neuron_set", "read_manifest"]
