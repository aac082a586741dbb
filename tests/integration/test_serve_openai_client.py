"""`hneurons serve` as a process, on the embedded SmolLM2, used by the official `openai` client.

The probe is synthetic (random weights over the model's neurons; the serving path is tested, not
the probe). The server is started as a user starts it, with the key in HNEURONS_API_KEY and port 0;
it binds, answers 503 on /health while the model loads, then serves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server_kit import serve_process, synthetic_run  # noqa: E402

openai = pytest.importorskip("openai")
KEY = "integration-key"
MAX_TOKENS = 6


@pytest.fixture(scope="module")
def served(tmp_path_factory, loaded):
    root = synthetic_run(tmp_path_factory.mktemp("run"), loaded, MAX_TOKENS)
    log = root / "requests.jsonl"
    with serve_process(str(root), "--request-log", str(log), env={"HNEURONS_API_KEY": KEY}) as (url, statuses):
        yield url, statuses, log


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
