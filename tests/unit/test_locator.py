"""The label-blind answer-span locator: phrases by hand, token spans on in-test tokenizers, label
blindness at the stage level, the LLM method against a fake server, quality measures, leak guards."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import bpe_tokenizer, sp_tokenizer  # noqa: E402
from test_judge import _FakeServer  # noqa: E402
from test_responses import _ctx, _samples  # noqa: E402

from hneurons.data.registry import Record  # noqa: E402
from hneurons.errors import ConfigError  # noqa: E402
from hneurons.text.locator import (  # noqa: E402
    LLMSpanLocator,
    answer_chars,
    answer_phrase,
    gpt4o_agreement,
    locate_answer_span,
    span_by_config,
    span_quality,
)
from hneurons.text.spans import Span, build_sequence  # noqa: E402
from hneurons.stages.responses import SampledPool, _label_and_split  # noqa: E402

FRANCE = "What is the capital of France?"

PHRASES = [
    (FRANCE, "The capital of France is Paris.", "Paris"),
    (FRANCE, "The capital of France is Lyon.", "Lyon"),
    (FRANCE, "Paris is the capital of France.", "Paris"),
    (FRANCE, "Paris", "Paris"),
    (FRANCE, "  **Paris**  ", "Paris"),
    (FRANCE, "Paris, of course.", "Paris"),
    ("Who wrote Hamlet?", "It was written by William Shakespeare.", "William Shakespeare"),
    ("Who wrote Hamlet?", "The answer is: Christopher Marlowe, who was a playwright.", "Christopher Marlowe"),
    ("Who wrote Hamlet?", "I think it's Napoleon Bonaparte (1769-1821).", "Napoleon Bonaparte"),
    ("Who wrote Harry Potter?", "J. K. Rowling. She wrote it in Edinburgh.", "J. K. Rowling"),
    ("Which psalm begins 'The Lord is my shepherd'?", "Psalm 23", "Psalm 23"),
    ("What are the main four blood groups?", "The four blood groups are A, B, AB, and O.", "A, B, AB, and O"),
    ("Where was the Rotary Club founded?", "The Rotary Club was set up in Chicago, which is a city.", "Chicago"),
    ("What is the highest denomination in Monopoly?", "£500", "£500"),
    ("In which war was the Battle of Blenheim?", "War of the Spanish Succession", "War of the Spanish Succession"),
    # a quoted piece that does not restate the question is the answer; one that does is the subject
    ("Which book by Harper Lee won the 1961 Pulitzer Prize?",
     "The 1961 Pulitzer Prize went to Harper Lee's novel “To Kill a Mockingbird” in 1961.", "To Kill a Mockingbird"),
    ("What is the only novel by J D Salinger?", 'It is "The Catcher in the Rye" which sold well in 2020.',
     "The Catcher in the Rye"),
    ("Who wrote ‘The Adventures of Huckleberry Finn’?",
     "The novel “The Adventures of Huckleberry Finn” was written by Mark Twain.", "Mark Twain"),
    # an introductory phrase before the first comma is not the answer
    ("In humans, esotropia affects which part of the body?",
     "In humans, esotropia affects the eye.", "eye"),
]


@pytest.mark.parametrize(("question", "response", "want"), PHRASES)
def test_phrase_by_hand(question, response, want):
    got = answer_phrase(question, response)
    assert got is not None and response[got[0]:got[1]] == want


def test_phrase_edge_cases():
    assert answer_phrase(FRANCE, "") is None and answer_phrase(FRANCE, " ?! ") is None
    # long rambling predicates are cut to the same number of words whatever the label
    long = "The capital is a large and beautiful old city on a river with many bridges and parks."
    got = answer_phrase(FRANCE, long)
    assert len(long[got[0]:got[1]].split()) <= 6
    # everything echoes the question: the clause stays, minus edge function words
    got = answer_phrase("Ezzard Charles was a world champion in which sport?",
                        "Ezzard Charles was a world champion in which sport.")
    assert got is not None and got[1] > got[0]
    assert answer_chars(FRANCE, " Paris. ", "response") == (1, 6)
    with pytest.raises(ConfigError):
        answer_chars(FRANCE, "Paris", "llm")
    with pytest.raises(ConfigError):
        answer_chars(FRANCE, "Paris", "alias")


@pytest.mark.parametrize("make_tok", [bpe_tokenizer, sp_tokenizer], ids=["bpe", "sp"])
def test_token_span_on_in_test_tokenizers(make_tok):
    tok = make_tok()
    for response, want in (("The capital of France is Paris.", "Paris"), ("It was Rome, a port.", "Rome")):
        seq = build_sequence(tok, f"{FRANCE} Respond with the answer only.", response)
        span = locate_answer_span(seq, FRANCE)
        assert isinstance(span, Span) and span.text == want
        assert seq.prompt_end <= span.start < span.end <= seq.response_end
        assert tok.decode(seq.input_ids[span.start:span.end]).strip() == want


@pytest.mark.parametrize("method", ["phrase", "response"])
def test_span_ignores_gold_and_verdict(method):
    tok = bpe_tokenizer()
    seq = build_sequence(tok, FRANCE, "The capital of France is Paris.")
    spans = {span_by_config(seq, FRANCE, method, None, alias) for alias in (None, "Paris", "France", "capital")}
    assert len(spans) == 1
    # the parity rule does read it (which is why it is not the default)
    leaky = {span_by_config(seq, FRANCE, "alias", None, alias).text for alias in (None, "Paris")}
    assert leaky == {"The capital of France is Paris", "Paris"}


def _stage_spans(tmp_path, flip: bool, method: str = "phrase") -> dict[str, tuple]:
    """Run the responses stage's labelling on 8 questions; ``flip`` swaps gold answers and verdicts."""
    records, done = [], {}
    for i in range(8):
        city = ["Paris", "Rome", "Oslo", "Madrid"][i % 4]
        right = (i < 4) != flip
        rec = Record(f"q{i}", f"What is the capital of country {i}?", (city if right else "Nowhere",))
        records.append(rec)
        text = f"The capital of country {i} is {city}."
        done[(rec.id, "sample")] = [dict(s, matched_alias=city if right else None) for s in
                                    _samples(rec.id, ["correct" if right else "wrong"] * 3, [text] * 3)]
    ctx = _ctx(tmp_path, **{"spans.method": method})
    _label_and_split(ctx, SampledPool(records, records, done))
    rows = pq.read_table(ctx.rundir.path("responses", "labelled.parquet")).to_pylist()
    return {r["qid"]: (r["label"], r["span_start"], r["span_end"], r["span_text"]) for r in rows}


def test_stage_spans_do_not_depend_on_the_label(tmp_path):
    a, b = _stage_spans(tmp_path / "a", False), _stage_spans(tmp_path / "b", True)
    assert {q: v[0] for q, v in a.items()} != {q: v[0] for q, v in b.items()}  # labels did flip
    assert {q: v[1:] for q, v in a.items()} == {q: v[1:] for q, v in b.items()}
    assert all(v[3] in ("Paris", "Rome", "Oslo", "Madrid") for v in a.values())
    stats = json.loads((tmp_path / "a" / "run" / "responses" / "stats.json").read_text())["spans"]
    assert stats["label_blind"] and stats["alias_recall"] == 1.0 and stats["length_ratio"] == 1.0
    # under the parity rule the same data gives label-dependent spans
    c, d = _stage_spans(tmp_path / "c", False, "alias"), _stage_spans(tmp_path / "d", True, "alias")
    assert {q: v[1:] for q, v in c.items()} != {q: v[1:] for q, v in d.items()}


def test_span_quality_by_hand():
    rows = [
        {"label": 0, "span_start": 10, "span_end": 12, "span_text": "Paris", "span_status": "ok",
         "matched_alias": "paris", "response_start": 8, "response_end": 14},
        {"label": 0, "span_start": 10, "span_end": 14, "span_text": "the city", "span_status": "ok",
         "matched_alias": "Rome", "response_start": 10, "response_end": 14},
        # matched as the judge matches: the bracket qualifier of the alias is not needed
        {"label": 0, "span_start": 3, "span_end": 6, "span_text": "Khartoum", "span_status": "ok",
         "matched_alias": "Khartoum (city)", "response_start": 0, "response_end": 6},
        {"label": 1, "span_start": 5, "span_end": 11, "span_text": "x", "span_status": "ok",
         "matched_alias": "", "response_start": 5, "response_end": 17},
        {"label": 1, "span_start": -1, "span_end": -1, "span_text": "", "span_status": "empty response"},
    ]
    q = span_quality(rows, "response")
    assert q["mean_tokens_faithful"] == 3.0 and q["mean_tokens_hallucinated"] == 6.0 and q["length_ratio"] == 2.0
    assert q["alias_recall"] == round(2 / 3, 4) and q["alias_recall_n"] == 3
    assert q["mean_fraction_faithful"] == pytest.approx((2 / 6 + 1.0 + 3 / 6) / 3, abs=1e-3)
    assert q["gpt4o"]["n"] == 573


def test_gpt4o_agreement_on_packaged_reference():
    """Known answer: the phrase rule matched GPT-4o's answer tokens on ≥ 95 % of the 573 dev responses."""
    got = gpt4o_agreement("phrase")
    assert got["n"] == 573 and got["exact"] >= 0.95 and got["token_f1"] >= 0.97


def test_llm_locator_validates_and_caches(tmp_path):
    replies = iter(['{"answer": ""}', "Paris!", '{"answer": "Lyon"}', '{"answer": "Paris"}'])
    server = _FakeServer(lambda prompt, n: (200, next(replies)))
    try:
        loc = LLMSpanLocator(server.url, "judge", cache_dir=tmp_path, backoff=0)
        resp = "The capital of France is Paris."
        # empty, non-JSON and not-a-substring replies are re-asked; the fourth is valid
        loc.max_attempts = 4
        assert loc(FRANCE, resp) == (resp.index("Paris"), resp.index("Paris") + 5)
        assert len(server.requests) == 4
        assert loc(FRANCE, resp) == (resp.index("Paris"), resp.index("Paris") + 5)  # cached
        assert len(server.requests) == 4
        loc.close()
        replies_left = iter(['{"answer": "Berlin"}'])
        server2 = _FakeServer(lambda prompt, n: (200, next(replies_left)))
        fallback = LLMSpanLocator(server2.url, "judge", cache_dir=None, backoff=0, max_attempts=1)
        assert fallback(FRANCE, resp) == answer_phrase(FRANCE, resp) and fallback.fallbacks == 1
        server2.close()
    finally:
        server.close()


def test_span_shape_baseline_catches_a_leaky_span_rule():
    from hneurons.detection.methods import BASELINES, EvalData, TrainData
    from hneurons.detection.token_stats import TokenStats
    from hneurons.core.features import FeatureItem

    rng = np.random.default_rng(0)
    items, labels = [], []
    for i in range(40):
        y = i % 2
        n = 8 + int(rng.integers(0, 4))
        span = (20, 28 if y else 21)  # leaky: wrong answers span the whole response
        items.append(FeatureItem(f"q{i}", tuple(range(40)), span, (20, 20 + n)))
        labels.append(y)
    from hneurons.detection.token_stats import span_shape

    shape = span_shape(items)
    n0 = items[0].response[1] - items[0].response[0]
    assert shape[0].tolist() == [1, 1 / n0, 0] and shape[1][0] == 8
    n = len(items)
    st = TokenStats(np.zeros(n), np.zeros(n), np.zeros(n), np.zeros((n, 2)), 1, shape)
    train = TrainData(np.zeros((n, 4)), None, np.array(labels), None, "3-vs-1", 2, 2, stats=st)
    scorer = BASELINES["span_shape"].fit(train)
    from hneurons.stats import auroc

    assert auroc(np.array(labels), scorer.score(EvalData(np.zeros((n, 4)), st))) == 1.0
