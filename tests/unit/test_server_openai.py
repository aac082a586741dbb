"""The server as the official ``openai`` client uses it: streaming, n > 1, completions, models, determinism."""

from __future__ import annotations

import concurrent.futures
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server_kit import served  # noqa: E402
from test_scoring import QUESTIONS  # noqa: E402

from hneurons.apply.guard import guarded_generate  # noqa: E402
from hneurons.apply.server import create_app  # noqa: E402
from hneurons.apply.state import ABSTAIN_TEXT  # noqa: E402
from hneurons.core.generation import row_seed  # noqa: E402

openai = pytest.importorskip("openai")
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def client(state):
    app = create_app(state, batch_wait_s=0.3, max_batch=8)
    with served(app) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0), app


def _reference(state, question: str, seed: int, choice: int = 0, temperature: float = 0.0) -> dict:
    (ref,) = guarded_generate(state, [question], max_new_tokens=MAX_TOKENS, temperature=temperature,
                              seeds=[row_seed(seed, 0, choice)])
    return ref


def test_chat_stream_sends_tokens_then_the_score(client, state):
    c, _ = client
    chunks = list(c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": QUESTIONS[0]}],
                                            max_tokens=MAX_TOKENS, temperature=0, seed=3, stream=True))
    ref = _reference(state, QUESTIONS[0], 3)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == ref["answer"] and text
    content_chunks = [ch for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(content_chunks) > 1  # token by token, not one piece at the end
    last = chunks[-1]
    assert last.choices[0].finish_reason == ref["finish_reason"]
    extra = last.model_extra["hneurons"]
    assert extra["p_hallucination"] == pytest.approx(ref["p_hallucination"], abs=1e-6)
    assert extra["abstained"] is False
    assert all(ch.model_extra.get("hneurons") is None for ch in chunks[:-1])


def test_n2_sampled_choices_are_each_rows_answer(client, state):
    c, _ = client
    resp = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": QUESTIONS[1]}],
                                     max_tokens=MAX_TOKENS, temperature=1.0, seed=11, n=2)
    assert [ch.index for ch in resp.choices] == [0, 1]
    for j, choice in enumerate(resp.choices):
        ref = _reference(state, QUESTIONS[1], 11, j, temperature=1.0)
        assert choice.message.content == ref["answer"]
        assert choice.model_extra["hneurons"]["p_hallucination"] == pytest.approx(ref["p_hallucination"], abs=1e-6)
    assert resp.usage.completion_tokens == sum(_reference(state, QUESTIONS[1], 11, j, 1.0)["completion_tokens"]
                                               for j in range(2))


def test_completions_plain_streamed_and_listed(client, state):
    c, _ = client
    resp = c.completions.create(model="tiny", prompt=[QUESTIONS[2], QUESTIONS[3]], max_tokens=MAX_TOKENS,
                                temperature=0, seed=5)
    assert resp.object == "text_completion" and len(resp.choices) == 2
    (ref,) = guarded_generate(state, [QUESTIONS[3]], max_new_tokens=MAX_TOKENS, seeds=[row_seed(5, 1, 0)])
    assert resp.choices[1].text == ref["answer"]
    assert resp.choices[1].model_extra["hneurons"]["p_hallucination"] == pytest.approx(ref["p_hallucination"], abs=1e-6)
    streamed = list(c.completions.create(model="tiny", prompt=QUESTIONS[3], max_tokens=MAX_TOKENS, temperature=0,
                                         stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].text for ch in streamed if ch.choices) == ref["answer"]
    assert streamed[-1].usage.completion_tokens == ref["completion_tokens"]
    assert [m.id for m in c.models.list().data] == ["tiny"]


def test_seeded_sampled_answer_is_the_same_alone_or_in_a_batch(client):
    c, app = client

    def ask(q: str, seed: int) -> str:
        r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": q}],
                                      max_tokens=MAX_TOKENS, temperature=1.0, seed=seed)
        return r.choices[0].message.content

    alone = [ask(QUESTIONS[4], s) for s in (1, 2, 3, 4)]
    before = app.state.worker.batches
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        mixed = [(QUESTIONS[4], s) for s in (1, 2, 3, 4)] + [(QUESTIONS[i], 7) for i in range(4)]
        together = list(pool.map(lambda a: ask(*a), mixed))
    assert app.state.worker.batches - before < len(mixed)  # they really shared batches
    assert together[:4] == alone
    assert len(set(alone)) > 1  # sampling, not greedy


def test_stream_with_abstention_never_shows_the_withheld_answer(state):
    app = create_app(state, abstain_above=0.0)  # every scored answer is above 0: all abstain
    with served(app) as url:
        c = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        chunks = list(c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": QUESTIONS[0]}],
                                                max_tokens=MAX_TOKENS, temperature=0, stream=True))
    texts = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert texts == [ABSTAIN_TEXT]
    assert chunks[-1].model_extra["hneurons"]["abstained"] is True


def test_errors_reach_the_client_typed(client):
    c, _ = client
    with pytest.raises(openai.BadRequestError, match="top_p"):
        c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], top_p=0.5)
    with pytest.raises(openai.NotFoundError, match="no route"):
        c.embeddings.create(model="tiny", input="hi")
