"""Integrity fails closed: a probe nothing vouches for, a non-finite or misshapen probe, and a
tampered file are refused; ``hneurons verify`` checks every stage and exits 0 only when all verify.

Before the fix, a missing or unreadable ``probe/_done.json`` left nothing to check, so a probe with a
NaN weight and an edited weight was used (exit 0, ``p_hallucination: null``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hostile_kit import D_FF, WEIGHTS, make_probe, make_run, write_items

from hneurons.errors import StageError
from hneurons.rundir import DONE_FILE, RunDir


def _score(hneurons, run, tmp_path, tiny_model):
    return hneurons("score", run, "--input", write_items(tmp_path / "in.jsonl"), "-o", tmp_path / "out.jsonl",
                    "--model", tiny_model)


def _nan_probe(run) -> None:
    """The attacker's edit: one weight NaN, another changed, written as a valid probe file."""
    weights = {**WEIGHTS, 3: float("nan"), 64 + 5: 400.0}
    make_probe(weights).save(run / "probe" / "probe.safetensors")


@pytest.mark.parametrize("marker", ["missing", "not json", "a list", "no hashes"])
def test_probe_without_a_readable_marker_is_refused(marker, tmp_path, tiny_model, hneurons) -> None:
    run = make_run(tmp_path / "run", tiny_model)
    _nan_probe(run)
    done = run / "probe" / DONE_FILE
    if marker == "missing":
        done.unlink()
    else:
        done.write_text({"not json": "{ torn", "a list": "[]", "no hashes": '{"inputs": "x"}'}[marker])
    code, _, err = _score(hneurons, run, tmp_path, tiny_model)
    assert code == 2 and not (tmp_path / "out.jsonl").exists()
    assert len(err) == 1 and str(done) in err[0] and "cannot be checked" in err[0], err
    assert f"hneurons probe {run} --force" in err[0]


def test_non_finite_probe_is_refused_even_with_a_rewritten_marker(tmp_path, tiny_model, hneurons) -> None:
    """A deliberate edit that also rewrites the marker passes the hashes; a NaN weight is still refused."""
    run = make_run(tmp_path / "run", tiny_model)
    _nan_probe(run)
    RunDir(run).mark_done("probe", "fp-probe", 1.0)  # the attacker re-hashes
    code, _, err = _score(hneurons, run, tmp_path, tiny_model)
    assert code == 2 and len(err) == 1, err
    assert "weight of neuron L0.N3 is nan" in err[0] and "must be finite" in err[0]


def test_probe_shape_must_match_the_model(tmp_path, tiny_model, hneurons) -> None:
    run = make_run(tmp_path / "run", tiny_model)
    h = json.loads((run / "probe" / "h_neurons.json").read_text())
    (run / "probe" / "h_neurons.json").write_text(json.dumps({**h, "n_layers": 4, "d_ff": D_FF // 2}))
    RunDir(run).mark_done("probe", "fp-probe", 1.0)
    code, _, err = _score(hneurons, run, tmp_path, tiny_model)
    assert code == 2 and "4 layers × 32 neurons" in err[-1] and "2 × 64" in err[-1], err
    make_probe({3: 1.0}, n=100).save(run / "probe" / "probe.safetensors")
    (run / "probe" / "h_neurons.json").write_text(json.dumps(h))
    RunDir(run).mark_done("probe", "fp-probe", 1.0)
    code, _, err = _score(hneurons, run, tmp_path, tiny_model)
    assert code == 2 and "100 weights do not fit 2 layers × 64 neurons" in err[-1], err


def test_a_tampered_file_with_its_marker_is_caught(tmp_path, tiny_model, hneurons) -> None:
    run = make_run(tmp_path / "run", tiny_model)
    path = run / "probe" / "probe.safetensors"
    data = bytearray(path.read_bytes())
    data[-8:] = np.float64(7.0).tobytes()  # a finite edit inside a valid safetensors file
    path.write_bytes(bytes(data))
    code, _, err = _score(hneurons, run, tmp_path, tiny_model)
    assert code == 2 and "does not match the sha256 recorded" in err[-1], err


def test_a_stage_the_manifest_calls_done_needs_its_marker(tmp_path, tiny_model) -> None:
    run = make_run(tmp_path / "run", tiny_model)
    rd = RunDir(run)
    rd.mark_done("responses", "fp", 1.0)
    rd.verify("responses")
    (run / "responses" / DONE_FILE).unlink()
    with pytest.raises(StageError, match=r"responses/_done\.json is missing.*hneurons responses .* --force"):
        rd.verify("responses")  # what every later stage checks before it runs
    assert not rd.is_done("responses", "fp")
    rd.verify("detect")  # never run: nothing to vouch for


def test_verify_prints_a_table_and_fails_closed(tmp_path, tiny_model, hneurons, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # one table row per line
    run = make_run(tmp_path / "run", tiny_model)
    RunDir(run).mark_skipped("origin", "no base model")
    code, out, _ = hneurons("verify", run)
    assert code == 0, out
    rows = {ln.split("│")[1].strip(): ln for ln in out.splitlines() if ln.count("│") >= 4}
    assert "ok" in rows["probe"] and "skipped" in rows["origin"] and "not run" in rows["responses"]
    assert rows["probe"].split("│")[3].strip() == "2"  # probe.safetensors and h_neurons.json

    (run / "probe" / "h_neurons.json").write_text("{}")
    code, out, _ = hneurons("verify", run)
    assert code == 1 and "damaged" in out and "h_neurons.json" in out

    RunDir(run).mark_done("probe", "fp-probe", 1.0)
    (run / "probe" / DONE_FILE).unlink()
    code, out, _ = hneurons("verify", run)
    assert code == 1 and "damaged" in out and "_done.json" in out

    _nan_probe(run)
    RunDir(run).mark_done("probe", "fp-probe", 1.0)  # hashes rewritten: the weights are still checked
    code, out, _ = hneurons("verify", run)
    assert code == 1 and "must be finite" in out.replace("\n", " ")

    (run / "detect").mkdir()
    (run / "detect" / "detection.json").write_text("{}")  # files no marker vouches for
    code, out, _ = hneurons("verify", run)
    assert code == 1 and "unfinished" in out

    (run / "manifest.json").write_text("[]")
    code, _, err = hneurons("verify", run)
    assert code == 2 and len(err) == 1 and "not an object" in err[0]
