"""Sampling backends: HF batching against a per-step reference, seeds, stops; OpenAI fake server."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import bpe_tokenizer, sp_tokenizer, tiny_llama  # noqa: E402

from hneurons.errors import ConfigError, EndpointError  # noqa: E402
from hneurons.core.generation import (  # noqa: E402
    Generation,
    HFBackend,
    SamplingParams,
    length_batches,
)
from hneurons.core.backends import make_backend  # noqa: E402
from hneurons.core.steps import DecodeStep, draw_tokens  # noqa: E402
from hneurons.text.prompts import render_prompt  # noqa: E402

QUESTIONS = [
    "Who wrote Hamlet?",
    "What is the capital of France? Respond with the answer only, without any explanation.",
    "Rome?",
    "Which is the highest mountain on Earth, Everest or K2?",
    "Paris",
]
GREEDY = SamplingParams(temperature=0, max_new_tokens=10)


@pytest.fixture(scope="module", params=["bpe", "sp"])
def setup(request):
    tok = bpe_tokenizer() if request.param == "bpe" else sp_tokenizer()
    model = tiny_llama(tok, seed=3)
    prompts = [render_prompt(tok, q) for q in QUESTIONS]
    return tok, model, prompts


def _reference_greedy(model, tok, prompt: str, max_new: int) -> list[int]:
    """Un-batched, cache-free greedy decoding: full forward pass per step, argmax."""
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_new):
            logits = model(torch.tensor([ids + out])).logits[0, -1]
            nxt = int(logits.argmax())
            if nxt == tok.eos_token_id:
                break
            out.append(nxt)
    return out


def test_batched_greedy_matches_reference(setup):
    tok, model, prompts = setup
    backend = HFBackend(model, tok, batch_size=2)  # several batches, mixed lengths, left padding
    batched = backend.generate(prompts, GREEDY, progress=False)
    assert [len(r) for r in batched] == [1] * len(prompts)
    for prompt, (gen,) in zip(prompts, batched):
        ref = _reference_greedy(model, tok, prompt, GREEDY.max_new_tokens)
        assert list(gen.token_ids) == ref
        assert gen.text == tok.decode(ref, skip_special_tokens=True).strip()
    one_at_a_time = [HFBackend(model, tok, batch_size=1).generate([p], GREEDY, progress=False)[0]
                     for p in prompts]
    assert one_at_a_time == batched


def test_sampling_reproducible_and_shaped(setup):
    tok, model, prompts = setup
    backend = HFBackend(model, tok, batch_size=4)
    params = SamplingParams(temperature=1.0, top_k=50, top_p=0.9, max_new_tokens=8, n=3, seed=7)
    a = backend.generate(prompts, params, progress=False)
    b = backend.generate(prompts, params, progress=False)
    assert a == b
    assert [len(r) for r in a] == [3] * len(prompts)
    assert all(isinstance(g, Generation) and len(g.token_ids) <= 8 for r in a for g in r)
    # a random tiny model at T=1 over ~250 tokens: samples of one prompt differ
    assert all(len({g.token_ids for g in r}) > 1 for r in a)
    c = backend.generate(prompts, SamplingParams(max_new_tokens=8, n=3, seed=8), progress=False)
    assert c != a
    # a response depends on (seed, prompt index, sample index), not on its batch-mates
    alone = HFBackend(model, tok, batch_size=1).generate(prompts, params, progress=False)
    assert alone == a
    # the global RNG is left alone
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    backend.generate(prompts[:1], params, progress=False)
    assert torch.equal(torch.rand(1), before)


@pytest.mark.parametrize("top_k", [5, 0])
def test_sampler_distribution(top_k):
    """Empirical frequencies of the per-row sampler match the top-k/top-p warped softmax."""
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -1.0, -2.0, -3.0])
    params = SamplingParams(temperature=0.8, top_k=top_k, top_p=0.9)
    rows = 6000
    gens = [torch.Generator().manual_seed(s) for s in range(rows)]
    draws = draw_tokens(logits.repeat(rows, 1), params, gens)
    freq = torch.bincount(draws, minlength=8).float() / rows
    # hand-computed: T=0.8, keep the top k, then top-p 0.9 drops the tail beyond 90 % of the mass
    kept = top_k or 8
    p = torch.softmax(logits / 0.8, -1)[:kept]
    p = p / p.sum()
    keep = torch.flip(torch.cumsum(torch.flip(p, [0]), 0), [0]) > 1 - 0.9
    expected = torch.zeros(8)
    expected[:kept] = torch.where(keep, p, torch.zeros(kept))
    expected = expected / expected.sum()
    assert expected[4] == 0 and expected[3] > 0  # the top-p cut is inside the top-k set
    assert torch.all(freq[expected == 0] == 0)
    assert torch.allclose(freq, expected, atol=0.02)


def test_trimming_finished_rows_changes_nothing(setup):
    """Dropping finished rows from batch and cache gives the same responses as keeping them."""
    tok, model, prompts = setup
    calls = {"n": 0}

    def force_eos(module, inputs, output):
        calls["n"] += 1
        output = output.clone()
        if calls["n"] % 10 == 3:  # first row of the batch ends at step 3
            output[0, -1, tok.eos_token_id] = 1e4
        if calls["n"] % 10 == 6:  # every row ends at step 6
            output[:, -1, tok.eos_token_id] = 1e4
        return output

    handle = model.lm_head.register_forward_hook(force_eos)
    try:
        results = {}
        for trim in (True, False):
            for params in (GREEDY, SamplingParams(max_new_tokens=10, n=2, seed=1)):
                calls["n"] = 0
                backend = HFBackend(model, tok, batch_size=len(prompts) * 2, trim_finished=trim)
                results[trim, params.greedy] = backend.generate(prompts, params, progress=False)
    finally:
        handle.remove()
    assert results[True, True] == results[False, True]
    assert results[True, False] == results[False, False]
    greedy_lengths = sorted(len(g.token_ids) for (g,) in results[True, True])
    assert greedy_lengths == [2] + [5] * (len(prompts) - 1)
    sampled = [g for r in results[True, False] for g in r]
    assert all(len(g.token_ids) <= 5 and g.finish_reason == "stop" for g in sampled)


def test_top_k_one_is_greedy(setup):
    tok, model, prompts = setup
    backend = HFBackend(model, tok, batch_size=8)
    greedy = backend.generate(prompts, GREEDY, progress=False)
    topk1 = backend.generate(
        prompts, SamplingParams(top_k=1, max_new_tokens=10, seed=5), progress=False
    )
    assert greedy == topk1


def test_stop_strings(setup):
    tok, model, prompts = setup
    backend = HFBackend(model, tok, batch_size=8)
    params = SamplingParams(temperature=0, max_new_tokens=12)
    full = backend.generate(prompts, params, progress=False)
    # choose, per prompt, a stop string that occurs in the middle of its greedy output
    raw = [tok.decode(list(r[0].token_ids), skip_special_tokens=True) for r in full]
    stop = next(s[len(s) // 2 : len(s) // 2 + 2] for s in raw if len(s.strip()) > 6)
    stopped = backend.generate(prompts, SamplingParams(temperature=0, max_new_tokens=12,
                                                       stop=(stop,)), progress=False)
    n_cut = 0
    for text, (f,), (s,) in zip(raw, full, stopped):
        if stop in text:
            n_cut += 1
            assert s.text == text[: text.find(stop)].strip()
            assert s.finish_reason == "stop"
            assert f.token_ids[: len(s.token_ids)] == s.token_ids
            assert stop not in tok.decode(list(s.token_ids), skip_special_tokens=True)
        else:
            assert s == f
    assert n_cut >= 1


def test_eos_under_a_forward_hook(setup):
    """A hook forcing eos at the third step ends every row there (pad == eos must not confuse)."""
    tok, model, prompts = setup
    assert tok.pad_token_id == tok.eos_token_id
    calls = {"n": 0}

    def force_eos(module, inputs, output):
        calls["n"] += 1
        if calls["n"] == 3:  # prefill, step 2, step 3
            output = output.clone()
            output[:, -1, tok.eos_token_id] = 1e4
            return output
        return None

    handle = model.lm_head.register_forward_hook(force_eos)
    try:
        out = HFBackend(model, tok, batch_size=8).generate(prompts, GREEDY, progress=False)
    finally:
        handle.remove()
    assert all(len(g.token_ids) == 2 and g.finish_reason == "stop" for (g,) in out)
    plain = HFBackend(model, tok, batch_size=8).generate(prompts, GREEDY, progress=False)
    assert all(g.finish_reason == "length" or len(g.token_ids) < 10 for (g,) in plain)
    assert [g.token_ids[:2] for (g,) in plain] == [g.token_ids for (g,) in out]


def test_params_and_factory_errors():
    with pytest.raises(ConfigError):
        SamplingParams(temperature=-1)
    with pytest.raises(ConfigError):
        SamplingParams(top_p=0)
    with pytest.raises(ConfigError):
        SamplingParams(n=0)
    with pytest.raises(ConfigError, match="hf, openai, vllm"):
        make_backend("llamacpp")
    with pytest.raises(ConfigError, match="openai"):
        make_backend("openai", base_url="http://x")  # model missing
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"pip install hneurons\[vllm\]"):
            make_backend("vllm", model="m")


# --------------------------------------------------------------------------- OpenAI backend


class _Handler(BaseHTTPRequestHandler):
    mode = "ok"
    seen: list[dict] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        auth = self.headers.get("Authorization")
        type(self).seen.append({"path": self.path, "auth": auth, **body})
        if self.mode == "garbage":
            payload, status = b"<html>not json</html>", 200
        elif self.mode == "nochoices":
            payload, status = json.dumps({"foo": 1}).encode(), 200
        elif self.mode == "notext":
            payload, status = json.dumps({"choices": [{"index": 0}]}).encode(), 200
        elif self.mode == "500":
            payload, status = b"boom", 500
        else:
            # echo the prompt so order can be checked; choices out of order on purpose
            choices = [
                {"index": k, "text": f"  {body['prompt']}#{k} tail\nmore ",
                 "finish_reason": "length" if k == 0 else "stop"}
                for k in range(body["n"])
            ][::-1]
            payload, status = json.dumps({"choices": choices}).encode(), 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture()
def server():
    _Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    _Handler.mode = "ok"


def _backend(httpd, **kw):
    host, port = httpd.server_address
    return make_backend("openai", base_url=f"http://{host}:{port}", model="tiny", retries=0, **kw)


def test_openai_backend(server):
    backend = _backend(server, api_key="sk-test", max_concurrency=4)
    prompts = [f"q{i}" for i in range(9)]
    params = SamplingParams(max_new_tokens=7, n=2, seed=3, stop=("\n",))
    out = backend.generate(prompts, params, progress=False)
    expected = [[f"q{i}#0 tail", f"q{i}#1 tail"] for i in range(9)]
    assert [[g.text for g in r] for r in out] == expected
    assert all(g.finish_reason == "stop" for r in out for g in r)  # client-side stop cut
    req = _Handler.seen[0]
    assert req["path"] == "/v1/completions" and req["auth"] == "Bearer sk-test"
    assert (req["model"], req["max_tokens"], req["n"], req["top_k"], req["top_p"], req["stop"]) == (
        "tiny", 7, 2, 50, 0.9, ["\n"])
    assert len({r["seed"] for r in _Handler.seen}) == 9  # a seed per prompt
    # without stop strings the server's finish_reason is kept
    out = backend.generate(["x"], SamplingParams(n=2), progress=False)
    assert [g.finish_reason for g in out[0]] == ["length", "stop"]
    assert out[0][0].text == "x#0 tail\nmore"


@pytest.mark.parametrize(
    ("mode", "match"),
    [("garbage", "non-JSON"), ("nochoices", "'choices'"), ("notext", r"choices\[0\]\.text"),
     ("500", "HTTP 500")],
)
def test_openai_backend_bad_answers(server, mode, match):
    _Handler.mode = mode
    with pytest.raises(EndpointError, match=match):
        _backend(server).generate(["q"], SamplingParams(), progress=False)


def test_openai_backend_server_down():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = make_backend("openai", base_url=f"http://127.0.0.1:{port}/v1", model="m")
    with pytest.raises(EndpointError, match=rf"cannot reach .*127\.0\.0\.1:{port}/v1/completions"):
        backend.generate(["q"], SamplingParams(), progress=False)


def _forced(tok, model, script):
    """lm_head hook making decode step i emit ``script[i]`` (then eos) for every row."""
    calls = {"n": 0}

    def force(module, inputs, output):
        step = calls["n"]
        calls["n"] += 1
        output = output.clone()
        output[:, -1, :] = -1e4
        output[:, -1, script[step] if step < len(script) else tok.eos_token_id] = 1e4
        return output

    return model.lm_head.register_forward_hook(force), calls


def test_newline_stop_waits_for_the_first_non_whitespace_token():
    """A leading "\\n" (base models open with one) does not end the answer; the next one does.

    Byte-level BPE only: the in-test SentencePiece vocabulary has no newline token.
    """
    tok = bpe_tokenizer()
    model = tiny_llama(tok, seed=3)
    prompts = [render_prompt(tok, q) for q in QUESTIONS]
    nl = tok("\n", add_special_tokens=False)["input_ids"][-1]
    word = tok("Paris", add_special_tokens=False)["input_ids"][-1]
    assert tok.decode([nl]) == "\n" and tok.decode([word]).strip()
    handle, _ = _forced(tok, model, [nl, nl, word, word, nl, word, word])
    try:
        (gen,), = HFBackend(model, tok, batch_size=8).generate(
            prompts[:1], SamplingParams(temperature=0, max_new_tokens=10, stop=("\n",)), progress=False)
    finally:
        handle.remove()
    assert gen.finish_reason == "stop"
    assert gen.token_ids == (nl, nl, word, word)
    assert gen.text == tok.decode([word, word]).strip()


def test_shared_prefix_prefilled_once_changes_nothing(setup):
    """The chat template's shared prefix is run once for one row; greedy and sampled outputs equal the
    whole-prompt prefill's (float32, so only the order of additions differs)."""
    tok, model, _ = setup
    # a common opening after the template's own, as a system turn would give
    prompts = [render_prompt(tok, f"Answer the quiz question below with a short answer. {q}") for q in QUESTIONS] * 2
    calls: list[tuple[int, ...]] = []

    def record(module, args, kwargs):
        calls.append(tuple(kwargs["input_ids"].shape))

    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    prefix = len(os.path.commonprefix(ids))
    assert prefix >= 8
    for params in (GREEDY, SamplingParams(max_new_tokens=10, n=3, seed=2)):
        handle = model.register_forward_pre_hook(record, with_kwargs=True)
        try:
            calls.clear()
            shared = HFBackend(model, tok, batch_size=64).generate(prompts, params, progress=False)
        finally:
            handle.remove()
        whole = HFBackend(model, tok, batch_size=64, share_prefix=False).generate(prompts, params, progress=False)
        assert shared == whole
        assert calls[0] == (1, prefix)  # the prefix: one row, the shared tokens
        assert calls[1] == (len(QUESTIONS), max(len(i) for i in ids) - prefix)  # each distinct remainder once


def test_batches_cut_by_padded_prompt_tokens(setup):
    """Long prompts do not pad short ones: batches hold ≤ max_batch_tokens padded prompt tokens."""
    tok, model, prompts = setup
    assert length_batches([20, 150, 60, 50, 40, 30, 20, 20, 20, 20], 64, 100) == \
        [[1], [2], [3, 4], [5, 0, 6], [7, 8, 9]]
    assert length_batches([5] * 5, 2, 100) == [[0, 1], [2, 3], [4]]
    lengths = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    tight = HFBackend(model, tok, batch_size=64, max_batch_tokens=2 * max(lengths))
    assert len(length_batches(lengths, 64, tight.max_batch_tokens)) > 1
    assert tight.generate(prompts, GREEDY, progress=False) == \
        HFBackend(model, tok, batch_size=64).generate(prompts, GREEDY, progress=False)
    with pytest.raises(ConfigError, match="max_batch_tokens"):
        HFBackend(model, tok, max_batch_tokens=0)


# --- the per-step observer ------------------------------------------------------------------------


def _encoded(tok, prompts):
    return [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]


@pytest.mark.parametrize("trim", [True, False])
def test_observer_sees_every_token_once_and_in_order(setup, trim):
    """What a streaming client would receive equals the finished generations, and nothing changes."""
    tok, model, prompts = setup
    backend = HFBackend(model, tok, batch_size=2, trim_finished=trim)  # several batches
    params = SamplingParams(max_new_tokens=10, seed=4)
    enc = _encoded(tok, prompts)
    seeds = list(range(len(prompts)))
    streamed: dict[int, list[int]] = {r: [] for r in range(len(prompts))}
    finished: list[int] = []
    steps: list[DecodeStep] = []

    def observer(step: DecodeStep) -> None:
        steps.append(step)
        assert len(step.rows) == len(step.tokens) == len(step.done)
        for row, token, done in zip(step.rows, step.tokens, step.done):
            if token is not None:
                streamed[row].append(token)
            if done:
                finished.append(row)

    watched = backend.decode(enc, seeds, params, observer=observer)
    assert watched == backend.decode(enc, seeds, params)
    assert {r: tuple(t) for r, t in streamed.items()} == {r: g.token_ids for r, g in enumerate(watched)}
    assert sorted(finished) == list(range(len(prompts)))  # each row reported done exactly once
    assert steps[0].index == 0 and all(s.index <= params.max_new_tokens - 1 for s in steps)


def test_step_index_names_the_tokens_the_last_forward_fed(setup):
    """At step s ≥ 1 the forward since the previous step fed each listed row its token s − 1."""
    tok, model, prompts = setup
    backend = HFBackend(model, tok, batch_size=8)
    fed: list[torch.Tensor] = []
    drawn: dict[tuple[int, int], int] = {}
    checked = {"n": 0}

    def record(module, args, kwargs):
        fed.append(kwargs["input_ids"][:, -1].clone())

    def observer(step: DecodeStep) -> None:
        if step.index > 0:
            for b, row in enumerate(step.rows):
                if (row, step.index - 1) in drawn:
                    assert int(fed[-1][b]) == drawn[row, step.index - 1]
                    checked["n"] += 1
        for row, token in zip(step.rows, step.tokens):
            if token is not None:
                drawn[row, step.index] = token

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        gens = backend.decode(_encoded(tok, prompts), [0] * len(prompts), GREEDY, observer=observer, feed_last=True)
    finally:
        handle.remove()
    # every generated token was fed once: the length-cut rows' last ones by the feed_last call
    assert checked["n"] == sum(len(g.token_ids) for g in gens)


def test_observer_stops_a_row(setup):
    """A stopped row (a client that went away) ends at once as "cancelled"; the others do not change."""
    tok, model, prompts = setup
    backend = HFBackend(model, tok, batch_size=8)
    params = SamplingParams(temperature=0, max_new_tokens=10)
    enc = _encoded(tok, prompts)
    plain = backend.decode(enc, [0] * len(prompts), params)

    def observer(step: DecodeStep) -> None:
        if step.index == 2:
            step.stop(1)

    stopped = backend.decode(enc, [0] * len(prompts), params, observer=observer)
    assert plain[1].finish_reason == "length" and len(plain[1].token_ids) == 10
    assert stopped[1].finish_reason == "cancelled"
    assert stopped[1].token_ids == plain[1].token_ids[:3]
    assert [g for r, g in enumerate(stopped) if r != 1] == [g for r, g in enumerate(plain) if r != 1]
    with pytest.raises(ConfigError, match="seeds"):
        backend.decode(enc, [0], params)
