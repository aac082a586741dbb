"""The responses stage's consistency filter, representative choice, spans and balanced disjoint splits."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import bpe_tokenizer  # noqa: E402

from hneurons.config import load_config  # noqa: E402
from hneurons.data.registry import Record  # noqa: E402
from hneurons.errors import StageError  # noqa: E402
from hneurons.rundir import RunDir, read_jsonl  # noqa: E402
from hneurons.labelling.consistency import representative as _representative  # noqa: E402
from hneurons.stages.responses import SampledPool, _judge, _label_and_split  # noqa: E402

WORDS = ["paris", "rome", "berlin", "madrid", "london", "oslo"]


def _ctx(tmp_path, **overrides):
    cfg = load_config("paper", overrides={"responses.k": 3, "responses.min_per_class": 2,
                                          "responses.heldout_fraction": 0.25, **overrides})
    return SimpleNamespace(cfg=cfg, rundir=RunDir(tmp_path / "run"), model=SimpleNamespace(tokenizer=bpe_tokenizer()),
                           log=lambda m: None)


def _samples(qid: str, verdicts: list[str], texts: list[str]) -> list[dict]:
    return [{"qid": qid, "phase": "sample", "sample": j, "text": t, "token_ids": [], "finish_reason": "stop",
             "verdict": v, "matched_alias": t if v == "correct" else None} for j, (v, t) in enumerate(zip(verdicts, texts))]


def test_consistency_filter_labels_and_splits(tmp_path) -> None:
    records, done = [], {}
    for i in range(8):  # q0-q3 always right, q4-q7 always wrong, q8 mixed, q9 has a refusal
        rec = Record(f"q{i}", f"the capital question {i}", (WORDS[i % 6],))
        records.append(rec)
        verdict = "correct" if i < 4 else "wrong"
        text = WORDS[i % 6] if i < 4 else WORDS[(i + 1) % 6]
        done[(rec.id, "sample")] = _samples(rec.id, [verdict] * 3, [text] * 3)
    records += [Record("q8", "mixed question", ("rome",)), Record("q9", "refused question", ("oslo",))]
    done[("q8", "sample")] = _samples("q8", ["correct", "wrong", "wrong"], ["rome", "paris", "paris"])
    done[("q9", "sample")] = _samples("q9", ["wrong", "refusal", "wrong"], ["paris", "i don't know", "paris"])
    ctx = _ctx(tmp_path)
    summary = _label_and_split(ctx, SampledPool(records, records, done, 30, 1.0, pool={"dataset": "t"}))
    stats = json.loads((ctx.rundir.path("responses", "stats.json")).read_text())
    assert stats["correct_count_hist"] == [4 + 1, 1, 0, 4]  # q4-q7 and q9 at 0, q8 at 1, q0-q3 at 3
    assert stats["kept"] == {"faithful": 4, "hallucinated": 4} and stats["mixed"] == 1 and stats["refusal_questions"] == 1
    assert summary["train_per_class"] == 3 and summary["heldout_per_class"] == 1
    rows = pq.read_table(ctx.rundir.path("responses", "labelled.parquet")).to_pylist()
    by = {r["qid"]: r for r in rows}
    assert {q for q, r in by.items() if r["label"] == 0} == {"q0", "q1", "q2", "q3"}
    assert all(r["span_status"] == "ok" and r["span_end"] > r["span_start"] for r in rows)
    assert by["q0"]["span_text"].lower() == "paris"
    splits = json.loads(ctx.rundir.path("responses", "splits.json").read_text())
    train = set(splits["train"]["0"] + splits["train"]["1"])
    held = set(splits["heldout"]["0"] + splits["heldout"]["1"])
    assert len(train) == 6 and len(held) == 2 and not train & held


def test_min_agree_and_too_few_questions(tmp_path) -> None:
    rec = [Record(f"q{i}", f"question {i}", ("rome",)) for i in range(2)]
    done = {("q0", "sample"): _samples("q0", ["correct", "correct", "wrong"], ["rome", "rome", "paris"]),
            ("q1", "sample"): _samples("q1", ["wrong"] * 3, ["paris"] * 3)}
    with pytest.raises(StageError, match="consistent questions"):
        _label_and_split(_ctx(tmp_path), SampledPool(rec, rec, done))
    ctx = _ctx(tmp_path / "b", **{"responses.min_agree": 2, "responses.min_per_class": 1})
    _label_and_split(ctx, SampledPool(rec, rec, done))
    rows = pq.read_table(ctx.rundir.path("responses", "labelled.parquet")).to_pylist()
    assert {r["qid"]: r["label"] for r in rows} == {"q0": 0, "q1": 1}


def test_representative_is_most_frequent_first_seen() -> None:
    s = [{"text": t} for t in ["b", "a", "a", "b", "c"]]
    assert _representative(s)["text"] == "b"  # tie between a and b: first in sampling order
    assert _representative([{"text": "x"}, {"text": "y"}, {"text": "y"}])["text"] == "y"


def test_empty_answers_are_no_answer_dropped_and_counted(tmp_path) -> None:
    ctx = _ctx(tmp_path, **{"responses.min_per_class": 1})
    judge = _judge(ctx)
    rec = Record("q", "capital of france", ("paris",))
    assert judge(rec, "") == ("no_answer", None) and judge(rec, " \n ") == ("no_answer", None)
    assert judge(rec, "paris")[0] == "correct" and judge(rec, "rome")[0] == "wrong"
    records = [Record(f"q{i}", f"question {i}", ("paris",)) for i in range(4)]
    done = {("q0", "sample"): _samples("q0", ["correct"] * 3, ["paris"] * 3),
            ("q1", "sample"): _samples("q1", ["wrong"] * 3, ["rome"] * 3),
            # all-empty would be "all K wrong" if empty counted as wrong: it must not become hallucinated
            ("q2", "sample"): _samples("q2", ["no_answer"] * 3, [""] * 3),
            ("q3", "sample"): _samples("q3", ["wrong", "no_answer", "wrong"], ["rome", "", "rome"])}
    _label_and_split(ctx, SampledPool(records, records, done))
    stats = json.loads(ctx.rundir.path("responses", "stats.json").read_text())
    assert stats["kept"] == {"faithful": 1, "hallucinated": 1}
    assert stats["no_answer_questions"] == 2 and stats["no_answer_samples"] == 4 and stats["refusal_questions"] == 0
    rows = pq.read_table(ctx.rundir.path("responses", "labelled.parquet")).to_pylist()
    assert {r["qid"]: r["label"] for r in rows} == {"q0": 0, "q1": 1}


def test_screen_samples_greedy_wrong_questions_only_until_the_classes_balance(tmp_path, monkeypatch) -> None:
    """Greedy-correct questions are all sampled; greedy-wrong ones a chunk at a time, in pool order, until
    the hallucinated class outnumbers the faithful one by the margin; a re-run takes the same decisions."""
    from hneurons.data import load_dataset
    from hneurons.core.generation import Generation
    from hneurons.stages import responses as stage

    records = load_dataset("smoke_qa")[:40]
    # the model knows the first 10 (answering with a plain-text alias: some lists open with an emoji)
    right = {rec.question: next(a for a in rec.answers if a.isascii() and a[0].isalpha()) for rec in records[:10]}
    calls: list[int] = []

    class Fake:
        name = "fake"

        def generate(self, prompts, params, progress=True):
            calls.append(len(prompts))
            out = []
            for p in prompts:
                q = next(q for q in (r.question for r in records) if q in p)
                out.append([Generation(right.get(q, "Atlantis"), (1,), "stop")] * params.n)
            return out

    monkeypatch.setattr(stage, "sampling_backend", lambda ctx: Fake())
    ctx = _ctx(tmp_path, **{"responses.dataset": "smoke_qa", "responses.n_questions": 40, "responses.screen": True,
                            "responses.k": 2, "responses.batch_size": 4, "responses.heldout_fraction": 0.2})
    ctx.rundir.update_manifest = lambda **kw: None
    stage.run(ctx)
    stats = json.loads(ctx.rundir.path("responses", "stats.json").read_text())
    # 10 faithful; hallucinated must reach 10 + max(2, 10 // 10) = 12, in chunks of (4 // 2) * 2 = 4 questions
    assert stats["screen"]["greedy_correct"] == 10 and stats["screen"]["greedy_wrong_sampled"] == 12
    assert stats["kept"] == {"faithful": 10, "hallucinated": 12} and stats["questions_sampled"] == 22
    sampled = {row["qid"] for row in read_jsonl(ctx.rundir.path("responses", "samples.jsonl")) if row["phase"] == "sample"}
    assert sampled == {rec.id for rec in records[:22]}  # the first 12 greedy-wrong ones, in pool order
    calls.clear()
    stage.run(ctx)  # everything is in the log: nothing is generated again, the same questions are kept
    again = json.loads(ctx.rundir.path("responses", "stats.json").read_text())
    assert calls == [] and all(again[k] == stats[k] for k in ("kept", "screen", "questions_sampled", "train"))
