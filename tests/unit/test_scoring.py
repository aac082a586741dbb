"""Scoring and guarded generation on a tiny random Llama with a synthetic run directory.

The tiny model's output vocabulary is restricted (a bias on ``lm_head``) to whole-word tokens with
a leading space, plus EOS, and its chat template puts a space between the role tag and the content,
so every generated answer re-tokenises to exactly the generated tokens. That makes the guarded
score (recorded during decoding) and :func:`score` (a fresh forward over the re-rendered text)
computable over the same tokens, and the test checks they agree.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import bpe_tokenizer, tiny_llama  # noqa: E402

from hneurons.core.arch import resolve  # noqa: E402
from hneurons.config import PAPER_SUFFIX, load_config  # noqa: E402
from hneurons.errors import ConfigError, DataError, FingerprintMismatch, StageError  # noqa: E402
from hneurons.core.features import FeatureItem, extract_cett  # noqa: E402
from hneurons.core.generation import HFBackend, SamplingParams  # noqa: E402
from hneurons.core.models import LoadedModel  # noqa: E402
from hneurons.probe.estimator import HNeuronProbe  # noqa: E402
from hneurons.rundir import RunDir  # noqa: E402
from hneurons.apply.guard import _response_span, guarded_generate  # noqa: E402
from hneurons.apply.score import read_items, score, score_file  # noqa: E402
from hneurons.apply.state import ABSTAIN_TEXT, load_state  # noqa: E402
from hneurons.text.locator import locate_answer_span  # noqa: E402
from hneurons.text.spans import Span, build_sequence  # noqa: E402

FINGERPRINT = "tiny0000fingerpr"
MAX_NEW = 10
SPACE_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
QUESTIONS = [
    "Who wrote Hamlet?",
    "What is the capital of France?",
    "Rome?",
    "Which is the highest mountain on Earth, Everest or K2? Think.",
    "Paris",
    "Who wrote The Iceman Cometh and when was it written?",
    "Jupiter",
    "Where is the Spirit of Ecstasy?",
]
# flat neuron index (layer * 64 + neuron) -> weight; 2 layers x 64 neurons
WEIGHTS = {3: 30.0, 17: -20.0, 64 + 5: 40.0, 64 + 40: 15.0, 100: -25.0}
INTERCEPT = -4.0


def word_tokens(tok) -> list[int]:
    """Token ids of whole words with a leading space that re-tokenise to themselves."""
    out = []
    for i in range(len(tok)):
        s = tok.convert_ids_to_tokens(i)
        if s.startswith("Ġ") and s[1:].isalpha() and len(s) > 2 and tok(" " + s[1:], add_special_tokens=False).input_ids == [i]:
            out.append(i)
    return out


def make_loaded(fingerprint: str = FINGERPRINT, eos_bias: float = 0.0) -> LoadedModel:
    tok = bpe_tokenizer()
    tok.chat_template = SPACE_TEMPLATE
    tok.padding_side = "left"
    model = tiny_llama(tok, seed=5)
    allowed = word_tokens(tok)
    head = torch.nn.Linear(model.config.hidden_size, len(tok), bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight * 4.0)
        head.bias.fill_(-1e4)
        head.bias[allowed] = 0.0
        head.bias[tok.eos_token_id] = eos_bias
    model.lm_head = head
    model.eval()
    return LoadedModel(model, tok, resolve(model), "tiny", "tiny", fingerprint, torch.device("cpu"), torch.float32)


def make_probe(n_neurons: int = 128, d_ff: int = 64) -> HNeuronProbe:
    probe = HNeuronProbe(C=1.0, d_ff=d_ff)
    coef = np.zeros(n_neurons)
    for f, w in WEIGHTS.items():
        coef[f] = w
    probe.coef_ = coef
    probe.intercept_ = INTERCEPT
    probe.classes_ = np.array([0, 1])
    probe.n_features_in_ = n_neurons
    return probe


def write_run(root: Path, fingerprint: str = FINGERPRINT, with_probe: bool = True) -> Path:
    cfg = load_config("paper", overrides={"model.name": "tiny", "responses.max_new_tokens": MAX_NEW})
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps({"config": cfg.to_dict(), "model": {"name": "tiny", "fingerprint": fingerprint}}))
    if with_probe:
        probe = make_probe()
        probe.save(root / "probe" / "probe.safetensors")
        (root / "probe" / "h_neurons.json").write_text(json.dumps({
            "model_fingerprint": fingerprint,
            "neurons": [{"layer": layer, "neuron": n, "weight": w} for layer, n, w in probe.h_neurons_]}))
        RunDir(root).mark_done("probe", "fp", 1.0)  # a probe is used only with the marker that vouches for it
    return root


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return make_loaded(eos_bias=0.1)  # some rows end on EOS, others at the length limit


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def state(run_dir, loaded):
    return load_state(run_dir, model=loaded)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_state_reads_run_settings(state):
    assert state.max_new_tokens == MAX_NEW and state.chat and state.suffix == PAPER_SUFFIX
    assert sorted(state.record.tolist()) == sorted(WEIGHTS)
    assert sorted(state.h_neurons.tolist()) == sorted(f for f, w in WEIGHTS.items() if w > 0)
    assert state.user_text("Who? ") == f"Who? {PAPER_SUFFIX}"
    assert state.user_text(f"Who? {PAPER_SUFFIX}") == f"Who? {PAPER_SUFFIX}"


def test_score_equals_direct_computation(state, loaded):
    items = [{"id": "a", "question": "Who wrote Hamlet?", "answer": "William Shakespeare wrote it."},
             {"question": "What is the capital of France?", "answer": " Paris. "},
             {"question": "Largest planet?", "answer": "the largest planet is Jupiter, not Neptune"}]
    res = score(state, items, batch_size=2)
    tok = loaded.tokenizer
    feats, spans = [], []
    for it in items:
        seq = build_sequence(tok, f"{it['question']} {PAPER_SUFFIX}", it["answer"])
        span = locate_answer_span(seq, it["question"])  # the run's label-blind rule (phrase)
        assert isinstance(span, Span)
        spans.append(span)
        feats.append(FeatureItem("x", tuple(seq.input_ids), (span.start, span.end), (seq.prompt_end, seq.response_end)))
    X = extract_cett(loaded.model, loaded.layout, feats, regions=("answer",), progress=False, batch_size=1)["answer"]
    idx = np.array(sorted(WEIGHTS))
    w = np.array([WEIGHTS[f] for f in idx])
    logits = INTERCEPT + X[:, idx].astype(np.float64) @ w  # by hand, not through the probe class
    for r, (out, span) in enumerate(zip(res, spans)):
        assert out["p_hallucination"] == pytest.approx(_sigmoid(logits[r]), abs=1e-6)
        assert out["span"] == {"start": span.start, "end": span.end, "text": span.text}
        assert out["span_status"] == "ok" and not out["generated"]
        contrib = {(n["layer"] * 64 + n["neuron"]): n["contribution"] for n in out["top_neurons"]}
        assert [n["name"] for n in out["top_neurons"]] == [f"L{f // 64}.N{f % 64}" for f in contrib]
        expect = sorted(((WEIGHTS[f] * float(X[r, f]), f) for f in idx), reverse=True)
        assert list(contrib) == [f for _, f in expect]
        for c, f in expect:
            assert contrib[f] == pytest.approx(c, rel=1e-5)
    assert res[0]["id"] == "a" and "id" not in res[1]
    assert res[1]["span"]["text"] == "Paris"  # whitespace and the trailing "." are not the answer
    assert 0.01 < min(o["p_hallucination"] for o in res) and max(o["p_hallucination"] for o in res) < 0.9999  # not saturated


def test_score_generates_missing_answer(state, loaded):
    (out,) = score(state, [{"question": "Rome?"}])
    plain = HFBackend(loaded.model, loaded.tokenizer).generate(
        [state.prompt("Rome?")], SamplingParams(temperature=0, max_new_tokens=MAX_NEW), progress=False)[0][0]
    assert out["generated"] and out["answer"] == plain.text and out["p_hallucination"] is not None


def test_fingerprint_mismatch_refused_unless_forced(run_dir, loaded):
    other = LoadedModel(loaded.model, loaded.tokenizer, loaded.layout, "tiny", "tiny", "different", loaded.device, loaded.dtype)
    with pytest.raises(FingerprintMismatch, match="--force"):
        score(run_dir, [{"question": "Rome?", "answer": "paris"}], model=other)
    (out,) = score(run_dir, [{"question": "Rome?", "answer": "paris"}], model=other, force=True)
    assert out["p_hallucination"] is not None


def test_run_without_probe_says_to_run_probe_stage(tmp_path, loaded):
    root = write_run(tmp_path / "noprobe", with_probe=False)
    with pytest.raises(StageError, match="hneurons probe"):
        load_state(root, model=loaded)


def test_probe_changed_since_its_stage_is_refused(tmp_path, loaded):
    """A probe whose bytes differ from the sha256 the probe stage recorded is never used."""
    root = write_run(tmp_path / "tampered")
    RunDir(root).mark_done("probe", "fp", 1.0)
    load_state(root, model=loaded)  # intact: accepted
    path = root / "probe" / "probe.safetensors"
    data = bytearray(path.read_bytes())
    data[-8:] = np.full(2, 7.0, dtype=np.float32).tobytes()  # still a valid safetensors file
    path.write_bytes(bytes(data))
    with pytest.raises(StageError, match=r"probe\.safetensors does not match the sha256.*hneurons probe .* --force"):
        load_state(root, model=loaded)


def test_guarded_alpha_must_be_finite_and_non_negative(state):
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="--alpha must be a finite number"):
            guarded_generate(state, QUESTIONS[:1], alpha=bad)


def test_read_items_errors_name_line_and_field(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text('{"question": "Q1?", "answer": "a"}\n{"answer": "b"}\n')
    with pytest.raises(DataError, match=r":2: field 'question'"):
        read_items(p)
    p.write_text('{"question": "Q1?"}\n\n{"question": "Q2?", "answer": "  "}\n')
    with pytest.raises(DataError, match=r":3: field 'answer'"):
        read_items(p)
    p.write_text('{"id": 1, "question": "Q1?"}\n{"id": "1", "question": "Q2?"}\n')
    with pytest.raises(DataError, match=r":2: field 'id'"):
        read_items(p)
    c = tmp_path / "in.csv"
    c.write_text("id,question,answer\nx,Q1?,paris\ny,Q2?,\n")
    with pytest.raises(DataError, match=r"in.csv:3: field 'answer'"):
        read_items(c)
    c.write_text("id,prompt\nx,Q1?\n")
    with pytest.raises(DataError, match="'question' column"):
        read_items(c)
    c.write_text("question,answer\nQ1?,paris\n")
    assert read_items(c) == [{"id": "2", "question": "Q1?", "answer": "paris"}]


def test_score_file_is_resumable(tmp_path, state):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = [{"id": f"q{i}", "question": q, "answer": "paris"} for i, q in enumerate(QUESTIONS[:3])]
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert score_file(state, inp, out, batch_size=2, progress=False) == {"items": 3, "scored": 3, "skipped": 0}
    first = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in first] == ["q0", "q1", "q2"]
    rows.append({"id": "q3", "question": QUESTIONS[3], "answer": "rome"})
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert score_file(state, inp, out, batch_size=2, progress=False) == {"items": 4, "scored": 1, "skipped": 3}
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in lines] == ["q0", "q1", "q2", "q3"] and lines[:3] == first


def test_score_file_never_resumes_from_another_input_or_probe(tmp_path, state):
    """Ids default to line numbers, so a second file into the same -o used to print "scored 0 item(s)"."""
    a, b, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "out.jsonl"
    a.write_text(json.dumps({"question": QUESTIONS[0], "answer": "paris"}) + "\n")
    b.write_text(json.dumps({"question": QUESTIONS[1], "answer": "rome"}) + "\n")
    assert score_file(state, a, out, progress=False)["scored"] == 1
    with pytest.raises(DataError, match=r"out.jsonl already holds 1 row\(s\) scored from another input file.*--force"):
        score_file(state, b, out, progress=False)
    other = dataclasses.replace(state, suffix="Answer briefly.")  # another run's scoring settings
    with pytest.raises(DataError, match="from another probe or model"):
        score_file(other, a, out, progress=False)
    assert score_file(state, b, out, force=True, progress=False) == {"items": 1, "scored": 1, "skipped": 0}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question"] for r in rows] == [QUESTIONS[1]]
    with pytest.raises(DataError, match="is a directory; give a file path"):
        score_file(state, a, tmp_path, progress=False)


def test_long_inputs_truncate_or_refuse(state, loaded):
    long_q = "Who wrote Hamlet? " * 40  # > 256 tokens, the tiny model's context
    item = [{"question": long_q, "answer": "William Shakespeare"}]
    with pytest.raises(DataError, match="context"):
        score(state, item, on_long="refuse")
    with pytest.warns(UserWarning, match="dropped the first"):
        (out,) = score(state, item, on_long="truncate")
    assert out["truncated_tokens"] > 0 and out["span"]["end"] <= 256 and out["p_hallucination"] is not None
    (short,) = score(state, [{"question": "Who wrote Hamlet?", "answer": "William Shakespeare"}])
    assert out["span"]["text"] == short["span"]["text"]


def test_guarded_alpha1_text_equals_plain_generation(state, loaded):
    plain = HFBackend(loaded.model, loaded.tokenizer, batch_size=4).generate(
        [state.prompt(q) for q in QUESTIONS], SamplingParams(temperature=0, max_new_tokens=MAX_NEW), progress=False)
    guarded = guarded_generate(state, QUESTIONS, batch_size=4)
    assert [g["response"] for g in guarded] == [p[0].text for p in plain]
    assert [g["finish_reason"] for g in guarded] == [p[0].finish_reason for p in plain]
    assert {g["finish_reason"] for g in guarded} == {"stop", "length"}  # both ways of ending are covered
    sampled = guarded_generate(state, QUESTIONS, batch_size=4, temperature=1.0, seed=3)
    plain_s = HFBackend(loaded.model, loaded.tokenizer, batch_size=4).generate(
        [state.prompt(q) for q in QUESTIONS], SamplingParams(temperature=1.0, max_new_tokens=MAX_NEW, seed=3), progress=False)
    assert [g["response"] for g in sampled] == [p[0].text for p in plain_s]


def test_guarded_score_equals_score_on_generated_answer(state, loaded):
    guarded = guarded_generate(state, QUESTIONS, batch_size=3)  # left padding, mixed lengths
    tok = loaded.tokenizer
    scored = score(state, [{"question": q, "answer": g["response"]} for q, g in zip(QUESTIONS, guarded)])
    n_checked = 0
    for q, g, s in zip(QUESTIONS, guarded, scored):
        if g["span"] is None:
            continue
        # precondition: the re-rendered text is exactly the tokens the model saw
        seq = build_sequence(tok, state.user_text(q), g["response"])
        prompt_ids = tok(state.prompt(q), add_special_tokens=False)["input_ids"]
        assert seq.input_ids[:g["span"]["end"]] == prompt_ids + tok(" " + g["response"], add_special_tokens=False)["input_ids"][:g["span"]["end"] - len(prompt_ids)]
        assert g["span"] == s["span"]
        assert g["p_hallucination"] == pytest.approx(s["p_hallucination"], abs=1e-3)
        assert g["p_hallucination"] == pytest.approx(s["p_hallucination"], abs=1e-5)  # float32: far tighter
        for a, b in zip(g["top_neurons"], s["top_neurons"]):
            assert (a["layer"], a["neuron"]) == (b["layer"], b["neuron"])
            assert a["cett"] == pytest.approx(b["cett"], abs=1e-5)
        n_checked += 1
    assert n_checked == len(QUESTIONS)
    assert len({round(g["p_hallucination"], 6) for g in guarded}) > 1


def test_abstention(state):
    base = guarded_generate(state, QUESTIONS[:4])
    ps = sorted(g["p_hallucination"] for g in base)
    threshold = (ps[1] + ps[2]) / 2
    guarded = guarded_generate(state, QUESTIONS[:4], abstain_above=threshold)
    for b, g in zip(base, guarded):
        assert g["response"] == b["response"]
        if g["p_hallucination"] > threshold:
            assert g["abstained"] and g["answer"] == ABSTAIN_TEXT
        else:
            assert not g["abstained"] and g["answer"] == b["response"]
    assert sum(g["abstained"] for g in guarded) == 2


def test_alpha_scales_h_neurons_and_leaves_model_unchanged(state):
    base = guarded_generate(state, QUESTIONS[:4])
    silenced = guarded_generate(state, QUESTIONS[:4], alpha=0.0)
    positive = {f for f, w in WEIGHTS.items() if w > 0}
    for g in silenced:
        assert g["alpha"] == 0.0
        for n in g["top_neurons"]:
            if n["layer"] * 64 + n["neuron"] in positive:
                assert n["cett"] == 0.0  # recorded after the α hook: the model's actual activations
    assert [g["p_hallucination"] for g in silenced] != [g["p_hallucination"] for g in base]
    again = guarded_generate(state, QUESTIONS[:4])
    assert again == base


def test_response_span_matches_score_span(state, loaded):
    """Guarded generation picks, from token ids, the same answer tokens score() picks after re-rendering."""
    tok = loaded.tokenizer
    q = "What is the capital of France?"
    cases = {"Paris.": "Paris", " the capital is Paris! ": "Paris", "... Rome": "Rome",
             "The capital of France is Lyon.": "Lyon", "I think it is Marseille, a port city.": "Marseille"}
    for text, want in cases.items():
        ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        span = _response_span(state, q, ids)
        seq = build_sequence(tok, f"{q} {PAPER_SUFFIX}", text)
        expect = locate_answer_span(seq, q)
        assert tok.decode(ids[span[0]:span[1]]).strip() == expect.text == want
    assert _response_span(state, q, tok(" . ,", add_special_tokens=False)["input_ids"]) is None


def test_guarded_observer_streams_and_stops_rows(state):
    """A server's observer sees each answer's tokens as decoded and can stop a row (client gone)."""
    base = guarded_generate(state, QUESTIONS[:4])
    streamed: dict[int, list[int]] = {i: [] for i in range(4)}

    def stream(step):
        for row, token in zip(step.rows, step.tokens):
            if token is not None:
                streamed[row].append(token)
        if step.index == 1:
            step.stop(2)

    got = guarded_generate(state, QUESTIONS[:4], observer=stream)
    tok = state.loaded.tokenizer
    for i in (0, 1, 3):  # the others keep their answers; scores move only by the batch's float rounding
        assert {k: v for k, v in got[i].items() if k not in ("p_hallucination", "top_neurons")} == \
            {k: v for k, v in base[i].items() if k not in ("p_hallucination", "top_neurons")}
        assert got[i]["p_hallucination"] == pytest.approx(base[i]["p_hallucination"], abs=1e-6)
        assert tok.decode(streamed[i], skip_special_tokens=True).strip() == base[i]["response"]
    assert got[2]["finish_reason"] == "cancelled" and got[2]["completion_tokens"] == len(streamed[2]) == 2
