"""Scoring and guarded generation end to end on the embedded SmolLM2 with a synthetic probe."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from hneurons.config import load_config  # noqa: E402
from hneurons.core.generation import HFBackend, SamplingParams  # noqa: E402
from hneurons.probe.estimator import HNeuronProbe  # noqa: E402
from hneurons.apply.guard import guarded_generate  # noqa: E402
from hneurons.apply.score import score, score_file  # noqa: E402
from hneurons.apply.state import load_state  # noqa: E402
from hneurons.rundir import RunDir  # noqa: E402

pytestmark = pytest.mark.integration

QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?", "Which planet is the largest in the solar system?"]
MAX_NEW = 16



@pytest.fixture(scope="module")
def state(loaded, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    n, d_ff = loaded.layout.n_neurons, loaded.layout.d_ff
    rng = np.random.default_rng(0)
    probe = HNeuronProbe(C=0.01, d_ff=d_ff)
    coef = np.zeros(n)
    idx = rng.choice(n, 30, replace=False)
    coef[idx] = rng.normal(0, 20, 30)
    probe.coef_, probe.intercept_, probe.classes_, probe.n_features_in_ = coef, -1.0, np.array([0, 1]), n
    probe.save(root / "probe" / "probe.safetensors")
    cfg = load_config("default", overrides={"responses.max_new_tokens": MAX_NEW})
    (root / "manifest.json").write_text(json.dumps({"config": cfg.to_dict(), "model": {"fingerprint": loaded.fingerprint}}))
    (root / "probe" / "h_neurons.json").write_text(json.dumps({"model_fingerprint": loaded.fingerprint, "neurons": []}))
    RunDir(root).mark_done("probe", "fp", 0.0)  # a probe is used only with the marker that vouches for it
    return load_state(root, model=loaded)


def test_guarded_alpha1_equals_plain_and_scores_agree(state, loaded, tmp_path):
    plain = HFBackend(loaded.model, loaded.tokenizer, batch_size=3).generate(
        [state.prompt(q) for q in QUESTIONS], SamplingParams(temperature=0, max_new_tokens=MAX_NEW), progress=False)
    guarded = guarded_generate(state, QUESTIONS, batch_size=3)
    assert [g["response"] for g in guarded] == [p[0].text for p in plain]
    assert all(g["p_hallucination"] is not None and len(g["top_neurons"]) == 5 for g in guarded)

    scored = score(state, [{"question": q, "answer": g["response"]} for q, g in zip(QUESTIONS, guarded)])
    agree = 0
    for g, s in zip(guarded, scored):
        if g["span"] == s["span"]:  # same tokens (the answer re-tokenises as generated)
            assert g["p_hallucination"] == pytest.approx(s["p_hallucination"], abs=1e-3)
            agree += 1
    assert agree >= 2

    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"id": str(i), "question": q}) + "\n" for i, q in enumerate(QUESTIONS[:2])))
    assert score_file(state, inp, out, progress=False)["scored"] == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["answer"] for r in rows] == [g["response"] for g in guarded[:2]]
    assert all(r["generated"] and 0.0 < r["p_hallucination"] < 1.0 for r in rows)
