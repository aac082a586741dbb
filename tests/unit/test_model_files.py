"""Opening model files: damaged files are one line (exit 2) in `info` and `run`, hub ids resolve offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import bpe_tokenizer, tiny_llama  # noqa: E402

import hneurons.cli.main as cli  # noqa: E402
from hneurons.core.model_files import gguf_header, resolve_model_source  # noqa: E402
from hneurons.core.models import load_model  # noqa: E402
from hneurons.errors import ModelLoadError  # noqa: E402


def _gguf(path: Path) -> Path:
    """A small GGUF with metadata and two float32 tensors (4 × 4 and 8 values: 64 + 32 bytes of data)."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("llama.block_count", 1)
    w.add_token_list(["<s>", "</s>", "▁Paris"])
    w.add_chat_template("{{ messages }}")
    w.add_tensor("a", np.ones((4, 4), dtype=np.float32))
    w.add_tensor("b", np.ones(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _cli_error(monkeypatch, capsys, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["hneurons", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert exc.value.code == 2 and len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


def test_gguf_header_reads_the_tensor_extent(tmp_path):
    path = _gguf(tmp_path / "m.gguf")
    header = gguf_header(path)
    assert header.n_tensors == 2 and "tokenizer.chat_template" in header.keys
    # the data section ends with tensor b (8 float32) after a (16 float32 = 64 bytes, already 32-aligned)
    assert header.data_end == path.stat().st_size or header.data_end + 32 > path.stat().st_size


@pytest.mark.parametrize("cut, words", [(0, r"is empty \(0 bytes\)"), (30, "truncated: its header ends"),
                                        (-8, "truncated: its tensors need")])
def test_damaged_gguf_is_one_line(cut, words, tmp_path):
    whole = _gguf(tmp_path / "m.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(whole[:cut] if cut >= 0 else whole[:len(whole) + cut])
    with pytest.raises(ModelLoadError, match=words):
        resolve_model_source(bad)


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return folder


def test_garbage_json_and_pickled_weights_are_refused(tmp_path):
    folder = _folder(tmp_path)
    (folder / "tokenizer_config.json").write_bytes(b"\x00{not json")
    with pytest.raises(ModelLoadError, match=r"tokenizer_config.json is not valid JSON"):
        resolve_model_source(folder)
    (folder / "tokenizer_config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ModelLoadError, match="pickled weights are not loaded; convert to safetensors"):
        resolve_model_source(folder)


@pytest.mark.parametrize("command", ["info", "run"])
def test_damaged_models_in_info_and_run(command, tmp_path, monkeypatch, capsys):
    """`run` probes the prompt format before loading: the check comes first, so it is one line too."""
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    short = tmp_path / "short.gguf"
    short.write_bytes(_gguf(tmp_path / "m.gguf").read_bytes()[:40])
    folder = _folder(tmp_path)
    (folder / "tokenizer_config.json").write_text("{oops")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    for model, words in ((empty, "is empty"), (short, "is truncated"), (folder, "is not valid JSON"),
                         (pickled, "pickled weights are not loaded")):
        args = ["info", str(model)] if command == "info" else ["run", "--preset", "smoke", "--model", str(model)]
        assert words in _cli_error(monkeypatch, capsys, *args)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face cache folder (models--org--name/snapshots/<rev>, refs/main) holding a tiny random model."""
    cache = tmp_path / "hub"
    repo = cache / "models--tiny-org--tiny-llama"
    snap = repo / "snapshots" / ("0" * 40)
    tok = bpe_tokenizer()
    tiny_llama(tok).save_pretrained(snap)
    tok.save_pretrained(snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return snap


def test_hub_id_resolves_from_the_local_cache(hub_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_model_source("tiny-org/tiny-llama") == hub_cache
    loaded = load_model("tiny-org/tiny-llama", dtype="float32", device="cpu")
    assert loaded.source == str(hub_cache) and loaded.layout.n_layers == 2
    with pytest.raises(ModelLoadError, match=r"nor in the local Hugging Face cache.*huggingface-cli download meta-llama/x"):
        resolve_model_source("meta-llama/x")


def test_hub_id_in_the_cli(hub_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["hneurons", "info", "tiny-org/tiny-llama", "--dtype", "float32"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 0
    assert "tiny-llama" in capsys.readouterr().out
    msg = _cli_error(monkeypatch, capsys, "info", "nobody/nothing")
    assert "huggingface-cli download nobody/nothing" in msg


def test_dequantized_gguf_cache(tmp_path, monkeypatch):
    """First load builds the float32 safetensors copy; later loads read it (bit-identical, cast as asked)."""
    import torch

    from hneurons.core import gguf_cache

    monkeypatch.setenv("HNEURONS_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "m.gguf"
    source.write_bytes(b"GGUF")
    tok = bpe_tokenizer()
    calls = []

    def from_gguf(src, kwargs):
        calls.append(kwargs["dtype"])
        return tok, tiny_llama(tok).to(kwargs["dtype"])

    monkeypatch.setattr(gguf_cache, "_from_gguf", from_gguf)
    _, first = gguf_cache.load_gguf(source, "fp1", {"dtype": torch.bfloat16})
    assert calls == [torch.float32] and first.dtype == torch.bfloat16  # de-quantised in float32, then cast
    folder = gguf_cache.cache_path(source, "fp1")
    assert (folder / gguf_cache.MARKER).is_file() and (folder / "model.safetensors").is_file()
    tok2, second = gguf_cache.load_gguf(source, "fp1", {"dtype": torch.bfloat16})
    assert calls == [torch.float32] and second.dtype == torch.bfloat16
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert tok2("Who wrote Hamlet?")["input_ids"] == tok("Who wrote Hamlet?")["input_ids"]
    (folder / "model.safetensors").write_bytes(b"damaged")  # a damaged cache is rebuilt, not used
    gguf_cache.load_gguf(source, "fp1", {"dtype": torch.float32})
    assert len(calls) == 2
    gguf_cache.load_gguf(source, "fp2", {"dtype": torch.float32})  # another file version: its own folder
    assert len(calls) == 3
    monkeypatch.setenv("HNEURONS_DEQUANT_CACHE", "0")
    gguf_cache.load_gguf(source, "fp1", {"dtype": torch.float32})
    assert len(calls) == 4
