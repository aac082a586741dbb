"""What the drift analysis reads from a model: its FFN weights, one layer at a time.

Two checkpoints of a 70B model do not fit in memory together, so the origin analysis (the paper,
arXiv 2512.01797 §7.2) compares them layer by layer. :class:`WeightSource` is what it needs;
:class:`hneurons.core.arch.Layout` provides it for a loaded model (GGUF pairs) and
:class:`SafetensorsWeights` for a checkpoint directory read tensor by tensor.
:func:`check_compatible` refuses pairs whose neurons do not correspond one to one.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol

import torch

from hneurons.core.arch import Arch, arch_for
from hneurons.errors import ConfigError, ModelLoadError


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


def config_value(cfg: dict[str, Any], *names: str) -> Any:
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
                f"({self.model_type}); load both models and call hneurons.origin.drift.neuron_drift on their layouts"
            )
        self._safe_open = safe_open
        self._key_to_file = self._weight_map()
        self._stack = ExitStack()
        self._handles: dict[str, Any] = {}
        self._prefix = self._find_prefix()
        down0 = self._raw(0, self.arch.down_proj)
        d0, d1 = down0.shape
        self.d_model, self.d_ff = (int(d0), int(d1)) if self.arch.weight_layout == "out_in" else (int(d1), int(d0))
        n = config_value(self.config, "num_hidden_layers", "n_layer")
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


def check_compatible(instruct: WeightSource, base: WeightSource, other: str = "origin.base_model",
                     fix: str = "pass the base checkpoint the instruct model was fine-tuned from") -> None:
    """Refuse pairs whose neurons do not correspond one to one (message names ``other`` and both values)."""
    for what, a, b in (
        ("architecture (model_type)", instruct.model_type, base.model_type),
        ("number of layers", instruct.n_layers, base.n_layers),
        ("neurons per layer (d_ff)", instruct.d_ff, base.d_ff),
        ("hidden size (d_model)", instruct.d_model, base.d_model),
    ):
        if a != b:
            raise ConfigError(f"{other} does not match the instruct model: {what} is {b!r} there but {a!r} for "
                              f"the instruct model; {fix}")


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
