"""`hneurons serve` as a process, on the embedded SmolLM2, used by the official `openai` client.

The probe is synthetic (random weights over the model's neurons; the serving path is tested, not
the probe). The server is started as a user starts it, with the key in HNEURONS_API_KEY and port 0;
it binds, answers 503 on /health while the model loads, then serves.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from hneurons.config import load_config
from hneurons.probe.estimator import HNeuronProbe
from hneurons.rundir import RunDir

openai = pytest.importorskip("openai")
KEY = "integration-key"
MAX_TOKENS = 6


def _synthetic_run(root, loaded) -> None:
    n, d_ff = loaded.layout.n_neurons, loaded.layout.d_ff
    rng = np.random.default_rng(0)
    probe = HNeuronProbe(C=0.01, d_ff=d_ff)
    coef = np.zeros(n)
    coef[rng.choice(n, 24, replace=False)] = rng.normal(0, 20, 24)
    probe.coef_, probe.intercept_, probe.classes_, probe.n_features_in_ = coef, -1.0, np.array([0, 1]), n
    probe.save(root / "probe" / "probe.safetensors")
    cfg = load_config("default", overrides={"responses.max_new_tokens": MAX_TOKENS})
    (root / "manifest.json").write_text(json.dumps({"config": cfg.to_dict(), "model": {"fingerprint": loaded.fingerprint}}))
    (root / "probe" / "h_neurons.json").write_text(json.dumps({"model_fingerprint": loaded.fingerprint, "neurons": []}))
    RunDir(root).mark_done("probe", "fp", 0.0)


@pytest.fixture(scope="module")
def served(tmp_path_factory, loaded):
    root = tmp_path_factory.mktemp("run")
    _synthetic_run(root, loaded)
    log = root / "requests.jsonl"
    env = {**os.environ, "HNEURONS_API_KEY": KEY, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "hneurons.cli.main", "serve", str(root), "--port", "0",
                             "--request-log", str(log)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
        assert found, line
        url = f"http://127.0.0.1:{found.group(1)}"
        statuses, deadline = [], time.monotonic() + 300
        while (code := httpx.get(url + "/health", timeout=10).status_code) != 200:
            statuses.append(code)
            assert proc.poll() is None and time.monotonic() < deadline, statuses
            time.sleep(0.2)
        yield url, statuses, log
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_openai_client_streams_asks_n2_and_completes(served):
    url, statuses, log = served
    assert set(statuses) <= {503}  # loading, then ready: never a hang or another error
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    plain = client.chat.completions.create(model="x", messages=question, max_tokens=MAX_TOKENS, temperature=0)
    chunks = list(client.chat.completions.create(model="x", messages=question, max_tokens=MAX_TOKENS, temperature=0,
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
    assert chunks[-1].model_extra["hneurons"]["p_hallucination"] == plain.model_extra["hneurons"]["p_hallucination"]
    two = client.chat.completions.create(model="x", messages=question, max_tokens=MAX_TOKENS, temperature=1.0,
                                         seed=3, n=2)
    assert len(two.choices) == 2 and all("hneurons" in c.model_extra for c in two.choices)
    done = client.completions.create(model="x", prompt="Who wrote Hamlet?", max_tokens=MAX_TOKENS, temperature=0)
    assert done.choices[0].text and done.object == "text_completion"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert sum(r.get("status") == 200 for r in records) == 4
    assert any(r.get("event") == "refused" for r in records)
