"""Scoring and guarded generation end to end on the embedded SmolLM2 with a synthetic probe."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server_kit import synthetic_run  # noqa: E402

from hneurons.core.generation import HFBackend, SamplingParams  # noqa: E402
from hneurons.apply.guard import guarded_generate  # noqa: E402
from hneurons.apply.score import score, score_file  # noqa: E402
from hneurons.apply.state import load_state  # noqa: E402

pytestmark = pytest.mark.integration

QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?", "Which planet is the largest in the solar system?"]
MAX_NEW = 16


@pytest.fixture(scope="module")
def state(loaded, tmp_path_factory):
    root = synthetic_run(tmp_path_factory.mktemp("run"), loaded, MAX_NEW, neurons=30)
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
