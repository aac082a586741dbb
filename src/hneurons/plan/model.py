"""What ``hneurons plan`` knows about a model: its shapes, read from ``config.json`` alone.

The neuron layout is not re-derived here. The config becomes a transformers config object and an
empty model skeleton on PyTorch's ``meta`` device (shapes only: no weights are read, no memory is
allocated, no remote code runs), and :func:`hneurons.core.arch.resolve` reads the layout off it
exactly as a run would, through the same adapter table. So the neuron counts ``plan`` prints are
those a run on the real checkpoint uses (MoE experts counted as docs/MOE.md says), and a model type
the table lacks is refused with the same "closest supported" message.

A model is named by a ``config.json`` file, a directory holding one, or a Hugging Face hub id
found in the local cache (``models--org--name/snapshots/<rev>/config.json``); nothing is fetched.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hneurons.errors import DataError, ModelLoadError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONFIG_NAME = "config.json"
# config attributes that give the experts chosen per token, by family (MoE rows of the adapter table)
_TOP_K_ATTRS = ("num_experts_per_tok", "moe_k", "experts_per_token")


@dataclass(frozen=True)
class ModelSpec:
    """Shapes of one model as a run would see them (widths per layer come from the adapter table)."""

    source: str
    model_type: str
    n_layers: int
    d_model: int
    d_ff: int  # flat-index stride: the widest layer
    widths: tuple[int, ...]  # neurons that exist in each layer
    n_experts: int  # routed experts per MoE layer (0: dense)
    expert_width: int
    experts_per_token: int
    shared_width: int
    moe_layers: int
    params_total: int
    params_active: int  # per token: all weights minus the routed experts not chosen
    kv_bytes_per_token: int  # bf16 keys + values over all layers
    vocab_size: int
    max_positions: int

    @property
    def n_neurons(self) -> int:
        """Neurons that exist (Σ widths; MoE: every expert's neurons plus shared ones)."""
        return sum(self.widths)

    @property
    def n_flat(self) -> int:
        """Length of the feature vector (``n_layers × d_ff``; narrower layers are padded)."""
        return self.n_layers * self.d_ff

    @property
    def weight_bytes(self) -> int:
        """All weights in bfloat16 (2 bytes each), as the GPU holds them."""
        return 2 * self.params_total


def _hub_cache() -> Path:
    """The Hugging Face hub cache, located as ``huggingface_hub`` does (env vars first)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _from_cache(repo_id: str, cache: Path) -> Path | None:
    """``config.json`` of a cached hub model: the snapshot ``refs/main`` names, else the newest one."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    ref = folder / "refs" / "main"
    if ref.is_file():
        candidate = folder / "snapshots" / ref.read_text().strip() / CONFIG_NAME
        if candidate.is_file():
            return candidate
    snapshots = sorted((folder / "snapshots").glob(f"*/{CONFIG_NAME}"), key=lambda p: p.stat().st_mtime)
    return snapshots[-1] if snapshots else None


def find_config(model: str, cache: Path | None = None) -> Path:
    """The ``config.json`` that ``model`` names: the file itself, a directory's, or a cached hub id's."""
    path = Path(model).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / CONFIG_NAME).is_file():
            return path / CONFIG_NAME
        raise ModelLoadError(f"{path} has no {CONFIG_NAME}; pass a Hugging Face model directory or its {CONFIG_NAME}")
    cache = cache or _hub_cache()
    parts = model.split("/")
    if len(parts) == 2 and all(parts):
        found = _from_cache(model, cache)
        if found is not None:
            return found
        raise ModelLoadError(
            f"{model!r} is not a file or directory and the Hugging Face cache {cache} has no {CONFIG_NAME} for it; "
            f"fetch it with `huggingface-cli download {model} {CONFIG_NAME}` (or pass the file)"
        )
    raise ModelLoadError(f"{model!r} does not exist and is not a hub id (org/name); pass a model's {CONFIG_NAME}, "
                         "its directory, or the id of a model in the local Hugging Face cache")


def read_config(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, or a one-line error naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} cannot be read ({type(exc).__name__}); pass a model's {CONFIG_NAME}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg}); pass a model's {CONFIG_NAME}") from None
    if not isinstance(data, dict) or not data.get("model_type"):
        raise DataError(f"{path}: no \"model_type\" field; this is not a Hugging Face model {CONFIG_NAME}")
    return data


def _skeleton(data: dict[str, Any], path: Path) -> Any:
    """An empty model on the meta device built from the config (no weights, no remote code)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = {k: v for k, v in data.items() if k not in ("model_type", "auto_map")}
    try:
        config = AutoConfig.for_model(str(data["model_type"]), **fields)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: transformers cannot build model_type {data['model_type']!r} from it ({first})") from None


def _experts_params(layout: Any) -> tuple[int, int]:
    """(parameters of one routed expert, MoE layers) summed as the fused tensors hold them."""
    per_expert, layers = 0, 0
    for layer in range(layout.n_layers):
        ex = layout.experts_of(layer)
        if ex is None:
            continue
        layers += 1
        tensors = [getattr(ex.module, n, None) for n in ("gate_up_proj", "down_proj", "gate_up_proj_bias", "down_proj_bias")]
        per_expert = max(per_expert, sum(int(t[0].numel()) for t in tensors if t is not None))
    return per_expert, layers


def _field(cfg: Any, name: str) -> Any:
    """A config field, or ``None``: heterogeneous configs (Gemma 4) refuse a global per-layer
    field such as ``head_dim`` with their own exception, which ``getattr``'s default does not catch."""
    try:
        return getattr(cfg, name, None)
    except Exception:  # noqa: BLE001 (AmbiguousGlobalPerLayerAttributeError is no AttributeError)
        return None


def _attention(tcfg: Any) -> tuple[int, int]:
    """(KV bytes per token in bf16 over all layers, positions) from the language model's config.

    Per-layer configs are summed layer by layer where the config has them (Gemma 4's local and
    global layers differ in head size)."""
    layers = _field(tcfg, "per_layer_config") or [tcfg] * int(_field(tcfg, "num_hidden_layers") or 0)
    total = 0
    for cfg in layers:
        heads = int(_field(cfg, "num_attention_heads") or _field(tcfg, "num_attention_heads") or 0)
        kv_heads = int(_field(cfg, "num_key_value_heads") or _field(tcfg, "num_key_value_heads") or heads)
        head_dim = _field(cfg, "head_dim") or (int(_field(tcfg, "hidden_size") or 0) // heads if heads else 0)
        total += 2 * kv_heads * int(head_dim) * 2
    return total, int(_field(tcfg, "max_position_embeddings") or 0)


def _check_type(data: dict[str, Any]) -> None:
    """Refuse an unknown type in one line naming the closest row, before building anything.

    A multimodal wrapper whose text model is a row (config.json ``qwen3_5_moe`` holding a
    ``qwen3_5_moe_text`` text_config) passes: ``AutoModelForCausalLM`` builds the text model.
    """
    from hneurons.core.arch import ARCHITECTURES, arch_for

    text = data.get("text_config")
    if isinstance(text, dict) and text.get("model_type") in ARCHITECTURES:
        return
    arch_for(str(data["model_type"]))


def model_spec(model: str, cache: Path | None = None) -> ModelSpec:
    """Read ``model``'s config and lay out its neurons as a run would (refuses unknown model types)."""
    from hneurons.core.arch import resolve, text_config

    path = find_config(model, cache)
    data = read_config(path)
    _check_type(data)
    skeleton = _skeleton(data, path)
    layout = resolve(skeleton)
    tcfg = text_config(skeleton.config)
    total = sum(int(p.numel()) for p in skeleton.parameters())
    per_expert, moe_layers = _experts_params(layout)
    first = next((layout.experts_of(i) for i in range(layout.n_layers) if layout.experts_of(i) is not None), None)
    n_experts = first.n_experts if first is not None else 0
    top_k = next((int(getattr(tcfg, a)) for a in _TOP_K_ATTRS if getattr(tcfg, a, None)), n_experts)
    kv, positions = _attention(tcfg)
    return ModelSpec(
        source=str(path), model_type=layout.model_type, n_layers=layout.n_layers, d_model=layout.d_model,
        d_ff=layout.d_ff, widths=tuple(layout.width(i) for i in range(layout.n_layers)), n_experts=n_experts,
        expert_width=first.width if first is not None else 0, experts_per_token=top_k if n_experts else 0,
        shared_width=first.shared_width if first is not None else 0, moe_layers=moe_layers, params_total=total,
        params_active=total - moe_layers * max(0, n_experts - top_k) * per_expert,
        kv_bytes_per_token=kv, vocab_size=int(getattr(tcfg, "vocab_size", 0) or 0), max_positions=positions,
    )
