"""Inputs larger than a stated limit are refused before anything is tokenized; a manifest that is not
a JSON object and a fingerprint mismatch each give one true line (exit 2), whatever the command.

Before the fix, one 10 MB JSONL line was tokenized whole (3.4 GB RSS), a manifest that is a JSON
list gave a traceback in ``probe`` and ``score``, and the probe stage advised "--force", which it
does not have for that.
"""

from __future__ import annotations

import json

import pytest
from hostile_kit import make_run, write_items



def test_a_huge_jsonl_line_is_refused_before_tokenizing(tmp_path, tiny_model, hneurons, no_model) -> None:
    from hneurons.trust import MAX_INPUT_BYTES

    run = make_run(tmp_path / "run", tiny_model)
    items = tmp_path / "in.jsonl"
    huge = json.dumps({"question": "Who wrote Hamlet? " * 60_000, "answer": "Shakespeare"})  # ~1 MB
    items.write_text(json.dumps({"question": "Q?", "answer": "a"}) + "\n" + huge + "\n")
    code, _, err = hneurons("score", run, "--input", items, "--model", tiny_model)
    assert code == 2 and len(err) == 1, err
    assert f"{items} line 2 is longer than the limit of {MAX_INPUT_BYTES} bytes" in err[0] and "--max-input-bytes" in err[0]
    small = write_items(tmp_path / "small.jsonl")
    code, _, err = hneurons("score", run, "--input", small, "--max-input-bytes", "40")
    assert code == 2 and f"{small} line 1 is longer than the limit of 40 bytes" in err[0], err


def test_a_huge_question_is_refused_before_tokenizing(tmp_path, tiny_model, hneurons, no_model) -> None:
    run = make_run(tmp_path / "run", tiny_model)
    code, _, err = hneurons("generate", run, "Who?", "x" * 300_000, "--model", tiny_model)
    assert code == 2 and len(err) == 1 and "question 2 is 300000 bytes" in err[0], err


def test_a_huge_request_is_refused_by_the_server(tmp_path, tiny_model) -> None:
    from fastapi.testclient import TestClient

    from hneurons.apply.server import create_app
    from hneurons.apply.state import load_state

    state = load_state(make_run(tmp_path / "run", tiny_model), overrides={"model.name": str(tiny_model)})
    app = create_app(state, max_input_bytes=1000)
    with TestClient(app) as client:
        body = {"messages": [{"role": "user", "content": "Who wrote Hamlet? " * 100}], "max_tokens": 2}
        r = client.post("/v1/chat/completions", content=json.dumps(body))
        assert r.status_code == 413 and "limit of 1000 bytes" in r.json()["error"]["message"]
        body["messages"][0]["content"] = "Who wrote Hamlet?"
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("command", ["probe", "score", "generate", "verify", "export"])
def test_a_manifest_that_is_a_list_is_one_line(command, tmp_path, tiny_model, hneurons, no_model) -> None:
    run = make_run(tmp_path / "run", tiny_model)
    (run / "manifest.json").write_text("[1, 2, 3]")
    extra = {"score": ["--input", write_items(tmp_path / "in.jsonl")], "generate": ["Who?"],
             "export": ["-o", tmp_path / "p.safetensors"]}.get(command, [])
    code, _, err = hneurons(command, run, *extra)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error:") and "manifest.json holds a JSON list, not an object" in err[0]


def test_fingerprint_advice_of_a_stage_command_is_true(tmp_path, tiny_model, hneurons) -> None:
    """The probe stage has no --force for another model: its advice is --model or a new run directory."""
    run = make_run(tmp_path / "run", tiny_model, fingerprint="0123456789abcdef")
    code, _, err = hneurons("probe", run, "--model", tiny_model)
    assert code == 2 and err[-1].startswith("error:"), err
    assert "0123456789abcdef" in err[-1] and "pass --model" in err[-1] and "new run directory" in err[-1]
    assert "--force" not in err[-1]


def test_feature_store_advice_is_true_for_the_stages_that_show_it(tmp_path) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from helpers import bpe_tokenizer, tiny_llama

    from hneurons.core.arch import resolve
    from hneurons.core.features import ExtractOptions, FeatureItem
    from hneurons.core.store import FeatureStore
    from hneurons.errors import FingerprintMismatch

    model = tiny_llama(bpe_tokenizer())
    items = [FeatureItem(f"q{i}", tuple(range(3, 10)), answer=(4, 6), response=(3, 7)) for i in range(2)]
    store = FeatureStore(tmp_path / "features" / "train")
    store.extract(model, resolve(model), items, model_fingerprint="aaaa", dtype="float32",
                  options=ExtractOptions(progress=False))
    with pytest.raises(FingerprintMismatch) as exc:
        store.load(expect_fingerprint="bbbb")
    assert "--force" not in str(exc.value) and "--model" in str(exc.value)


def test_score_fingerprint_advice_names_force_which_score_has(tmp_path, tiny_model, hneurons) -> None:
    run = make_run(tmp_path / "run", tiny_model, fingerprint="0123456789abcdef")
    items = write_items(tmp_path / "in.jsonl")
    code, _, err = hneurons("score", run, "--input", items, "-o", tmp_path / "o.jsonl", "--model", tiny_model)
    assert code == 2 and "--force" in err[-1] and "--model" in err[-1], err
    code, _, err = hneurons("score", run, "--input", items, "-o", tmp_path / "o.jsonl", "--model", tiny_model, "--force")
    assert code == 0, err
