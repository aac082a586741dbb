"""origin.checkpoints on a constructed training run: weights interpolated from a random start to the
final model, where the drift to the final model must shrink monotonically and the last checkpoint is
the final model itself."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from hneurons.core.arch import resolve
from hneurons.core.features import FeatureItem
from hneurons.errors import ConfigError
from hneurons.origin.checkpoints import (
    CheckpointSettings,
    TransferItems,
    follow_checkpoints,
    open_checkpoints,
    resolve_checkpoint,
)
from hneurons.origin.drift import neuron_drift
from hneurons.origin.weights import SafetensorsWeights
from hneurons.stats import auroc
from tests.helpers import bpe_tokenizer, tiny_llama

STEPS = (0, 250, 500, 750, 1000)


def _interpolate(start: torch.nn.Module, final: torch.nn.Module, t: float) -> torch.nn.Module:
    out = copy.deepcopy(final)
    with torch.no_grad():
        for p, a, b in zip(out.parameters(), start.parameters(), final.parameters()):
            p.copy_((1 - t) * a + t * b)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ckpts")
    tok = bpe_tokenizer()
    final, start = tiny_llama(tok, seed=0), tiny_llama(tok, seed=1)
    dirs = []
    for step in STEPS:
        d = root / f"step{step}"
        _interpolate(start, final, step / STEPS[-1]).save_pretrained(d, safe_serialization=True)
        tok.save_pretrained(d)
        dirs.append(str(d))
    final.save_pretrained(root / "final", safe_serialization=True)
    return {"root": root, "tok": tok, "final": final, "dirs": dirs}


def test_drift_to_the_final_model_shrinks_monotonically(run: dict) -> None:
    seen: list[dict] = []
    with SafetensorsWeights(run["root"] / "final") as final:
        cks = open_checkpoints(final, len(run["tok"]), run["dirs"])
        out = follow_checkpoints(final, cks, [3, 70, 100], CheckpointSettings(permutations=50), on_result=seen.append)
        per_neuron = [neuron_drift(final, SafetensorsWeights(d)) for d in run["dirs"]]
    assert seen == out and [e["step"] for e in out] == list(STEPS)
    raw = [e["drift"]["mean_raw_drift_all"] for e in out]
    assert all(a > b for a, b in zip(raw, raw[1:])) and raw[-1] == pytest.approx(0.0, abs=1e-12)
    h = [e["drift"]["mean_raw_drift_h"] for e in out]
    assert all(a > b for a, b in zip(h, h[1:]))
    # every neuron, not only the means: the angle to the final weights shrinks along the path
    up = np.stack([d.drift_up for d in per_neuron])
    assert (np.diff(up, axis=0) <= 1e-12).all()
    assert out[0]["drift"]["n_h"] == 3 and out[0]["transfer"] is None


def _items(tok, n: int) -> list[FeatureItem]:
    from hneurons.text.spans import build_sequence, whole_response_span

    items = []
    for i in range(n):
        seq = build_sequence(tok, f"Who wrote book {i}?", ["Paris", "Rome", "Jupiter is big", "Neptune"][i % 4])
        span = whole_response_span(seq)
        items.append(FeatureItem(f"q{i}", tuple(seq.input_ids), (span.start, span.end), (seq.prompt_end, seq.response_end)))
    return items


def test_transfer_at_the_final_checkpoint_equals_the_probe_on_the_final_model(run: dict, tmp_path) -> None:
    from hneurons.core.models import load_model
    from hneurons.core.answer_store import answer_features
    from hneurons.probe.estimator import HNeuronProbe, build_rows

    tok = run["tok"]
    items = _items(tok, 24)
    final = load_model(run["dirs"][-1], dtype="float32", device="cpu")
    X = answer_features(tmp_path / "final", final, items, dtype="float32", batch_size=8)
    y = (X[:, 5] > np.median(X[:, 5])).astype(np.int64)  # a planted rule the probe can learn
    Xr, yr, _ = build_rows(X, None, y, "1-vs-1")
    probe = HNeuronProbe(C=1e4, mode="1-vs-1", d_ff=resolve(run["final"]).d_ff).fit(Xr, yr)
    expected = auroc(y, probe.predict_proba(X)[:, 1])
    tr = TransferItems(probe, items, y, tmp_path / "stores", batch_size=8, device="cpu")
    with SafetensorsWeights(run["root"] / "final") as fw:
        out = follow_checkpoints(fw, open_checkpoints(fw, len(tok), run["dirs"][-2:]), [5],
                                 CheckpointSettings(permutations=20, n_boot=50), transfer=tr)
    assert expected > 0.9
    assert out[-1]["transfer"]["auroc"] == pytest.approx(expected)
    assert 0.0 <= out[0]["transfer"]["auroc"] <= 1.0 and out[0]["transfer"]["n"] == 24


def test_a_checkpoint_of_another_model_is_refused_before_any_work(run: dict, tmp_path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = run["tok"]
    wide = tiny_llama(tok)
    cfg = LlamaConfig(**{**wide.config.to_dict(), "intermediate_size": 48})
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "wide", safe_serialization=True)
    cfg = LlamaConfig(**{**wide.config.to_dict(), "vocab_size": len(tok) + 7})
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "vocab", safe_serialization=True)
    with SafetensorsWeights(run["root"] / "final") as final:
        for bad, what in (("wide", "neurons per layer"), ("vocab", "vocabulary size")):
            with pytest.raises(ConfigError, match=f"checkpoint .*{bad} does not match the instruct model: {what}"):
                open_checkpoints(final, len(tok), [run["dirs"][0], str(tmp_path / bad)])
    with pytest.raises(ConfigError, match="is not a directory"):
        resolve_checkpoint(str(tmp_path / "absent"))
    assert resolve_checkpoint(run["dirs"][2]).step == 500


def test_stage_writes_checkpoints_json_without_a_base_model(run: dict, tmp_path) -> None:
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from hneurons.config import load_config
    from hneurons.core.models import load_model
    from hneurons.core.answer_store import answer_features
    from hneurons.pipeline import Context
    from hneurons.probe.estimator import HNeuronProbe, build_rows
    from hneurons.rundir import RunDir, read_jsonl
    from hneurons.stages import origin as stage
    from hneurons.text.spans import build_sequence, whole_response_span

    tok = run["tok"]
    tok.save_pretrained(run["root"] / "final")
    rows = []
    for i in range(12):
        prompt, resp = f"Who wrote book {i}?", ["Paris", "Rome", "Jupiter is big", "Neptune"][i % 4]
        span = whole_response_span(build_sequence(tok, prompt, resp))
        rows.append({"qid": f"q{i}", "prompt": prompt, "response": resp, "label": i % 2, "split": "heldout",
                     "span_start": span.start, "span_end": span.end, "span_status": "ok"})
    rd = RunDir(tmp_path / "run")
    pq.write_table(pa.Table.from_pylist(rows), rd.path("responses", "labelled.parquet"))
    final = load_model(str(run["root"] / "final"), dtype="float32", device="cpu")
    items = _items(tok, 12)
    X = answer_features(tmp_path / "train", final, items, dtype="float32", batch_size=8)
    Xr, yr, _ = build_rows(X, None, np.array([r["label"] for r in rows]), "1-vs-1")
    probe = HNeuronProbe(C=1e4, mode="1-vs-1", d_ff=final.layout.d_ff).fit(Xr, yr)
    probe.save(rd.path("probe", "probe.safetensors"))
    rd.path("probe", "h_neurons.json").write_text(json.dumps({"neurons": [{"layer": 0, "neuron": 5, "weight": 1.0}]}))
    cfg = load_config("smoke", overrides={"model.name": str(run["root"] / "final"), "model.device": "cpu",
                                          "model.dtype": "float32", "origin.checkpoints": ",".join(run["dirs"][::2]),
                                          "origin.permutations": 20, "detect.n_boot": 30})
    ctx = Context(cfg, rd, _model=final, log=lambda s: None)
    assert len(stage.inputs(ctx)["checkpoints"]) == 3
    summary = stage.run(ctx)
    assert summary["status"] == "not run" and list(summary["checkpoints"]) == run["dirs"][::2]
    doc = json.loads(rd.path("origin", "checkpoints.json").read_text())
    assert [e["step"] for e in doc["checkpoints"]] == [0, 500, 1000] and doc["items"].startswith("12 held-out")
    assert doc["checkpoints"][-1]["transfer"]["auroc"] == pytest.approx(auroc(yr, probe.predict_proba(X)[:, 1]))
    assert len(read_jsonl(rd.path("origin", "checkpoints.jsonl"))) == 3


def test_cli_refuses_a_checkpoint_of_another_model_in_one_line(run: dict, tmp_path) -> None:
    import os
    import subprocess
    import sys

    from transformers import LlamaConfig, LlamaForCausalLM

    tok = run["tok"]
    final = tmp_path / "final"
    run["final"].save_pretrained(final, safe_serialization=True)
    tok.save_pretrained(final)
    cfg = LlamaConfig(**{**run["final"].config.to_dict(), "num_hidden_layers": 3})
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "deeper", safe_serialization=True)
    out = subprocess.run([sys.executable, "-m", "hneurons.cli.main", "origin", str(tmp_path / "run"), "--model", str(final),
                          "--checkpoints", f"{run['dirs'][0]},{tmp_path / 'deeper'}"], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"})
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]  # beside the "[origin] running" log line
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(errors) == 1 and "deeper does not match the instruct model: number of layers is 3" in errors[0], out.stderr
    assert not (tmp_path / "run" / "origin" / "checkpoints.jsonl").exists()
