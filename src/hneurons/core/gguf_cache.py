"""Loading a GGUF model once: its de-quantised weights and converted tokenizer, kept as safetensors.

transformers de-quantises a GGUF file tensor by tensor in Python and converts its vocabulary into a
fast tokenizer on every load. For the embedded Q4_1 SmolLM2-135M that took 12-75 s on the 2-core
test machine against ~3.5 s for the same weights from safetensors (measured in the issue-26 work;
docs/MODELS.md), and every CLI command and test process pays it. So the first load writes the
float32 weights and the tokenizer to ``<cache>/dequantized/<name>-<fingerprint>-tf<version>/``
(the fingerprint is the sha256 of the GGUF file, so a changed file is never served stale; the
transformers version is in the key because the de-quantiser belongs to it), and later loads read
that folder. The float32 copy is cast to the requested dtype exactly as the GGUF path casts its
de-quantised float32 tensors, so both paths give bit-identical weights (tested).

``HNEURONS_DEQUANT_CACHE=0`` turns the cache off; a cache folder that cannot be loaded is rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from hneurons.core.model_files import cache_dir

CACHE_SWITCH = "HNEURONS_DEQUANT_CACHE"
MARKER = "hneurons_dequantized.json"


def enabled() -> bool:
    """Whether de-quantised GGUF weights are cached (on unless ``HNEURONS_DEQUANT_CACHE=0``)."""
    return os.environ.get(CACHE_SWITCH, "1").strip().lower() not in {"0", "off", "false", "no"}


def cache_path(source: Path, fingerprint: str) -> Path:
    """The cache folder of one GGUF file under this transformers version."""
    import transformers

    return cache_dir() / "dequantized" / f"{source.stem}-{fingerprint}-tf{transformers.__version__}"


def _from_gguf(source: Path, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tok = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name,
                                                 quantization_config=GgufConfig(dequantize=True), **kwargs)
    return tok, model


def _from_cache(path: Path, kwargs: dict[str, Any]) -> tuple[Any, Any] | None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (path / MARKER).is_file():
        return None
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception:  # noqa: BLE001 - safetensors and transformers raise many types; a damaged cache is rebuilt
        shutil.rmtree(path, ignore_errors=True)
        return None
    return tok, model


def _store(path: Path, source: Path, tok: Any, model: Any) -> None:
    """Write the cache folder under a temporary name and rename it into place (a race keeps the first)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps({"source": str(source), "dtype": "float32"}) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only or full cache only costs speed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_gguf(source: Path, fingerprint: str, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """Tokenizer and model of a GGUF file: from the de-quantised cache when present, else built and cached."""
    if not enabled():
        return _from_gguf(source, kwargs)
    path = cache_path(source, fingerprint)
    cached = _from_cache(path, kwargs)
    if cached is not None:
        return cached
    dtype = kwargs.get("dtype", torch.float32)
    tok, model = _from_gguf(source, {**kwargs, "dtype": torch.float32})
    path.parent.mkdir(parents=True, exist_ok=True)
    _store(path, source, tok, model)
    return tok, model.to(dtype)
