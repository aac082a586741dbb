"""A portable probe file (``hneurons export``) scores exactly like its run directory and is data only:
numbers and JSON metadata, no model path, no code flag, no endpoint; a damaged or edited one is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hostile_kit import ITEMS, make_run, write_items
from safetensors import safe_open
from safetensors.numpy import save_file



@pytest.fixture
def exported(tmp_path, tiny_model, hneurons):
    run = make_run(tmp_path / "run", tiny_model, settings={"responses.suffix": "Answer briefly.",
                                                           "model.prompt_format": "chat"})
    out = tmp_path / "shared" / "probe.safetensors"
    code, _, err = hneurons("export", run, "-o", out)
    assert code == 0 and out.is_file(), err
    return run, out


def _scores(path):
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_score_with_the_probe_file_equals_score_with_the_run(exported, tmp_path, tiny_model, hneurons) -> None:
    run, probe_file = exported
    items = write_items(tmp_path / "in.jsonl")
    code, _, err = hneurons("score", run, "--input", items, "-o", tmp_path / "a.jsonl", "--model", tiny_model)
    assert code == 0, err
    code, _, err = hneurons("score", "--probe", probe_file, "--model", tiny_model, "--input", items,
                            "-o", tmp_path / "b.jsonl")
    assert code == 0, err
    a, b = _scores(tmp_path / "a.jsonl"), _scores(tmp_path / "b.jsonl")
    assert set(a) == {it["id"] for it in ITEMS}
    for key in a:
        assert a[key]["p_hallucination"] is not None
        assert b[key]["p_hallucination"] == a[key]["p_hallucination"]
        assert b[key]["span"] == a[key]["span"] and b[key]["top_neurons"] == a[key]["top_neurons"]


def test_generate_takes_the_probe_file(exported, tiny_model, hneurons) -> None:
    _, probe_file = exported
    code, out, err = hneurons("generate", "--probe", probe_file, "--model", tiny_model, "--json",
                              "Who wrote Hamlet?", "What is the capital of France?")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["question"] for r in rows] == ["Who wrote Hamlet?", "What is the capital of France?"]


def test_the_probe_file_is_data_only(exported) -> None:
    run, probe_file = exported
    with safe_open(str(probe_file), framework="numpy") as fh:
        meta = json.loads(fh.metadata()["hneurons"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    assert set(tensors) == {"neurons", "weights", "intercept"}
    assert tensors["neurons"].tolist() == [3, 17, 69, 100, 104]
    assert meta["n_layers"] == 2 and meta["d_ff"] == 64 and meta["suffix"] == "Answer briefly."
    assert meta["prompt_format"] == "chat" and meta["span_method"] == "phrase" and meta["max_new_tokens"] == 6
    text = json.dumps(meta)
    assert "trust_remote_code" not in text and "_url" not in text and str(run.parent) not in text


def _rewrite(path, tensors, meta) -> None:
    save_file(tensors, str(path), metadata={"hneurons": json.dumps(meta)})


@pytest.mark.parametrize("edit, words", [
    ("flip", "do not match the sha256"),
    ("nan", "must be finite"),
    ("index", "neuron indices must be increasing"),
    ("shape", "n_features 100 is not n_layers 2 × d_ff 64"),
    ("format", "is not a portable probe"),
])
def test_an_edited_probe_file_is_refused(edit, words, exported, tmp_path, tiny_model, hneurons, no_model) -> None:
    from hneurons.apply.portable import _digest

    _, probe_file = exported
    with safe_open(str(probe_file), framework="numpy") as fh:
        meta = json.loads(fh.metadata()["hneurons"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if edit == "flip":
        tensors["weights"][1] += 1.0  # sha256 left as exported
    elif edit == "nan":
        tensors["weights"][0] = np.nan
        meta["sha256"] = _digest(tensors)  # a deliberate edit that rewrites the digest too
    elif edit == "index":
        tensors["neurons"][2] = 500
        meta["sha256"] = _digest(tensors)
    elif edit == "shape":
        meta["n_features"] = 100
    else:
        meta["format"] = "pickle"
    _rewrite(probe_file, tensors, meta)
    code, _, err = hneurons("score", "--probe", probe_file, "--model", tiny_model,
                            "--input", write_items(tmp_path / "in.jsonl"))
    assert code == 2 and len(err) == 1 and words in err[0], err


def test_export_refuses_a_run_it_cannot_vouch_for(tmp_path, tiny_model, hneurons) -> None:
    run = make_run(tmp_path / "run", tiny_model)
    (run / "probe" / "_done.json").unlink()
    code, _, err = hneurons("export", run, "-o", tmp_path / "p.safetensors")
    assert code == 2 and "_done.json is missing" in err[0] and not (tmp_path / "p.safetensors").exists()


def test_run_directory_or_probe_not_both(exported, tmp_path, hneurons, no_model) -> None:
    run, probe_file = exported
    code, _, err = hneurons("score", run, "--probe", probe_file, "--input", write_items(tmp_path / "in.jsonl"))
    assert code == 2 and "not both" in err[0]
    code, _, err = hneurons("generate", run, "Who?", "--probe", probe_file)
    assert code == 2 and "not both" in err[0]
    code, _, err = hneurons("score", "--input", write_items(tmp_path / "in.jsonl"))
    assert code == 2 and "--probe FILE" in err[0]
