"""The embedded SmolLM2-135M-Instruct: offline loading, layout, chat template, greedy answer, identity."""

from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # set before transformers is imported: any download attempt fails
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from hneurons.errors import ModelLoadError  # noqa: E402
from hneurons.core.models import EMBEDDED_NAME, fingerprint, load_model, model_info  # noqa: E402

pytestmark = pytest.mark.integration

SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"



def test_loads_offline_with_the_expected_layout(loaded) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    info = model_info(loaded)
    assert info["name"] == EMBEDDED_NAME
    assert info["model_type"] == "llama"
    assert (info["n_layers"], info["d_ff"], info["d_model"], info["n_neurons"]) == (30, 1536, 576, 46_080)
    assert info["dtype"] == "float32" and info["device"] == "cpu" and info["chat_template"] is True
    assert 130e6 < info["n_parameters"] < 140e6
    assert info["down_proj"] == "model.layers.{i}.mlp.down_proj"
    assert len(loaded.layout.down_projs) == 30


def test_chat_template_renders_the_smollm_system_prompt(loaded) -> None:
    text = loaded.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    assert text == SYSTEM + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


def test_greedy_answer_names_paris(loaded) -> None:
    import torch

    tok = loaded.tokenizer
    enc = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = loaded.model.generate(**enc, max_new_tokens=20, do_sample=False, pad_token_id=tok.pad_token_id)
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_fingerprint_is_stable(loaded) -> None:
    fresh = [fingerprint.__wrapped__(loaded.source) for _ in range(2)]  # bypass the cache: hash the file twice
    assert fresh[0] == fresh[1] == loaded.fingerprint
    assert len(loaded.fingerprint) == 16 and int(loaded.fingerprint, 16) >= 0


@pytest.mark.parametrize("kind", ["missing", "not_gguf", "empty_dir"])
def test_bad_model_path_is_a_one_line_model_load_error(tmp_path, kind: str) -> None:
    if kind == "missing":
        path = tmp_path / "no-such-model"
    elif kind == "not_gguf":
        path = tmp_path / "model.gguf"
        path.write_bytes(b"not a gguf file")
    else:
        path = tmp_path  # a directory without config.json or a .gguf file
    with pytest.raises(ModelLoadError) as exc:
        load_model(str(path), dtype="float32", device="cpu")
    msg = str(exc.value)
    assert msg and "\n" not in msg and str(path) in msg
