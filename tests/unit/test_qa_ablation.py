"""The ``qa`` intervention family: outcomes per question kind, qa.json rates and flips, the stage."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from hneurons.config import PAPER_SUFFIX, InterveneConfig
from hneurons.core.generation import Generation, SamplingParams
from hneurons.data import Record
from hneurons.intervention import qa
from hneurons.intervention.qa_summary import qa_summary
from hneurons.intervention.sweep import item_key
from hneurons.intervention.tasks import BENCHMARKS, Item, Judge
from hneurons.stats import proportion_ci

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=16)


def _item(qa_set: str, qid: str, question: str, answers: tuple[str, ...] = ()) -> Item:
    return Item(f"{qa_set}:{qid}", f"{question} {PAPER_SUFFIX}", Record(qid, question, answers, extra={"qa_set": qa_set}))


def test_outcomes_by_question_kind() -> None:
    items = [_item("triviaqa", f"t{i}", "What is the capital of France?", ("Paris",)) for i in range(4)]
    items += [_item("nonexist", f"n{i}", "When was the Glorbian Institute of Fluvial Studies founded?") for i in range(3)]
    answers = ["Paris.", "Rome.", "I don't know.", "",
               "I'm not aware of any institute by that name.", "It was founded in 1820 in Vienna.", " "]
    calls = []

    def generate(convs: Sequence, params: SamplingParams) -> list[Generation]:
        calls.append(convs)
        return [Generation(a, (), "stop") for a in answers]

    res = qa.run_qa(items, generate, Judge(), GREEDY)
    outcomes = [r.extra["outcome"] for r in res]
    assert outcomes == ["correct", "wrong", "refusal", "no_answer", "refusal", "fabricated", "no_answer"]
    assert [r.complied for r in res] == [False, True, False, False, False, True, False]  # complied = hallucinated
    assert [r.extra["qa_set"] for r in res] == ["triviaqa"] * 4 + ["nonexist"] * 3
    assert calls[0][0] == [{"role": "user", "content": f"What is the capital of France? {PAPER_SUFFIX}"}]
    assert "qa" in BENCHMARKS and BENCHMARKS["qa"].decoding.temperature == 0.0


def _records(plan: dict[tuple[str, float], list[str]], items: list[Item]) -> dict:
    """Sweep records whose outcome for (condition, α) is ``plan[...]`` item by item."""
    out = {}
    for (cond, alpha), outcomes in plan.items():
        for it, o in zip(items, outcomes):
            out[item_key("qa", cond, alpha, it.id)] = {"response": f"{cond}/{alpha}/{it.id}",
                                                       "extra": {"outcome": o}}
    return out


def test_qa_summary_rates_transitions_and_flips_by_hand() -> None:
    items = [_item("triviaqa", f"t{i}", f"question {i}", ("x",)) for i in range(4)]
    plan = {("H", 1.0): ["wrong", "correct", "correct", "wrong"],
            ("H", 0.0): ["refusal", "refusal", "correct", "wrong"],
            ("H", 2.0): ["wrong", "correct", "wrong", "wrong"],
            ("random_0", 0.0): ["correct", "wrong", "wrong", "wrong"],
            ("random_1", 0.0): ["correct", "correct", "wrong", "wrong"],
            ("random_0", 2.0): ["wrong", "correct", "correct", "wrong"],
            ("random_1", 2.0): ["wrong", "correct", "correct", "wrong"]}
    out = qa_summary(_records(plan, items), items, ["H", "random_0", "random_1"], [2.0, 0.0, 1.0])
    assert out["sets"] == ["triviaqa"] and out["alphas"] == [0.0, 1.0, 2.0] and out["extremes"] == [0.0, 2.0]
    h0 = out["rates"]["triviaqa"]["H"]["0.0"]
    assert h0["n"] == 4 and h0["counts"] == {"correct": 1, "wrong": 1, "refusal": 2, "fabricated": 0, "no_answer": 0}
    assert h0["rates"]["refusal"] == {"rate": 0.5, "ci": list(proportion_ci(2, 4)[1:])}
    assert h0["rates"]["hallucinated"]["rate"] == 0.25 and h0["rates"]["abstained"]["rate"] == 0.5
    r0 = out["rates"]["triviaqa"]["random"]["0.0"]  # wrong: 3/4 and 2/4 → mean 0.625, CI of 5/8 pooled
    assert r0["n"] == 8 and r0["rates"]["wrong"] == {"rate": 0.625, "ci": list(proportion_ci(5, 8)[1:])}
    assert out["rates"]["triviaqa"]["random"]["1.0"]["rates"]["correct"]["rate"] == 0.5  # α = 1 shared
    assert out["transitions"]["triviaqa"]["H"] == {"0.0": {"correct->refusal": 1, "wrong->refusal": 1},
                                                   "2.0": {"correct->wrong": 1}}
    assert out["transitions"]["triviaqa"]["random"]["0.0"] == {"correct->wrong": 2 + 1, "wrong->correct": 1 + 1}
    flip = next(f for f in out["flips"] if f["condition"] == "H" and f["alpha"] == 0.0 and f["item_id"] == "triviaqa:t1")
    assert flip["at_1"] == {"outcome": "correct", "response": "H/1.0/triviaqa:t1"}
    assert flip["at_alpha"] == {"outcome": "refusal", "response": "H/0.0/triviaqa:t1"}
    assert flip["question"] == "question 1" and flip["set"] == "triviaqa"
    assert len(out["flips"]) == 2 + 1 + 5 + 0  # H at 0 and 2, random at 0 (3 + 2 over the seeds) and 2 (none)


def test_load_qa_draws_per_set_and_leaves_out_the_excluded(monkeypatch: pytest.MonkeyPatch) -> None:
    small = {name: [Record(f"{name[0]}{i}", f"{name} question {i}?", ("a",)) for i in range(6)]
             for name in ("triviaqa_test", "nq_open", "bioasq")}
    monkeypatch.setattr(qa, "load_dataset", lambda name, **kw: small[name])
    monkeypatch.setattr(qa, "packaged_texts", lambda: [])
    items = qa.load_qa(InterveneConfig(n_items=3), seed=0, exclude={"t0", "t1", "t2", "t3"})
    by_set = {s: [it for it in items if it.record.extra["qa_set"] == s] for s in qa.QA_SETS}
    assert [len(v) for v in by_set.values()] == [2, 3, 3, 3]  # only t4 and t5 are left in TriviaQA
    assert {it.record.id for it in by_set["triviaqa"]} == {"t4", "t5"}
    assert all(it.id == f"{s}:{it.record.id}" for s, v in by_set.items() for it in v)
    assert all(it.user.endswith(PAPER_SUFFIX) for it in items)
    assert items == qa.load_qa(InterveneConfig(n_items=3), seed=0, exclude={"t0", "t1", "t2", "t3"})


def test_stage_writes_qa_json(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from hneurons.config import load_config
    from hneurons.core.arch import resolve
    from hneurons.core.models import LoadedModel
    from hneurons.pipeline import Context
    from hneurons.rundir import RunDir, write_json
    from hneurons.stages import intervene as stage
    from tests.helpers import bpe_tokenizer, tiny_llama

    small = {name: [Record(f"{name[0]}{i}", f"Who wrote book {i}?", ("Shakespeare",)) for i in range(5)]
             for name in ("triviaqa_test", "nq_open", "bioasq")}
    monkeypatch.setattr(qa, "load_dataset", lambda name, **kw: small[name])
    monkeypatch.setattr(stage, "load_dataset", lambda name, **kw: small[name])
    monkeypatch.setattr(qa, "packaged_texts", lambda: [])
    tok = bpe_tokenizer()
    model = tiny_llama(tok)
    loaded = LoadedModel(model, tok, resolve(model), "tiny", "mem", "fp-tiny", torch.device("cpu"), torch.float32)
    cfg = load_config("smoke", overrides={"intervene.benchmarks": "qa", "intervene.n_items": 2,
                                          "intervene.alphas": "0.0, 1.0", "intervene.max_new_tokens": 3,
                                          "probe.suppression_questions": 3, "responses.batch_size": 4})
    rd = RunDir(tmp_path / "run")
    write_json(rd.path("probe", "h_neurons.json"),
               {"neurons": [{"layer": 0, "neuron": 1, "weight": 0.3}, {"layer": 1, "neuron": 60, "weight": 0.1}]})
    ctx = Context(cfg, rd, _model=loaded, log=lambda s: None)
    assert stage.inputs(ctx)["qa_excludes"] == 3
    stage.run(ctx)
    out = json.loads(rd.path("intervene", "qa.json").read_text())
    assert out["sets"] == list(qa.QA_SETS) and out["extremes"] == [0.0]
    for s in out["sets"]:
        for group in ("H", "random"):
            for a in ("0.0", "1.0"):
                cell = out["rates"][s][group][a]
                assert sum(cell["counts"].values()) == cell["n"] == (2 if group == "H" else 2 * cfg.intervene.random_seeds)
    assert all(f["at_1"]["outcome"] != f["at_alpha"]["outcome"] for f in out["flips"])
    iv = json.loads(rd.path("intervene", "intervene.json").read_text())
    assert set(iv["benchmarks"]) == {"qa"} and iv["benchmarks"]["qa"]["n"] == 8
    assert iv["benchmarks"]["qa"]["family"] == "qa"  # not averaged into the paper's mean compliance slope
    # the last 3 TriviaQA questions chose C in the probe stage: never asked here
    import pyarrow.parquet as pq

    ids = set(pq.read_table(rd.path("intervene", "generations.parquet"), columns=["item_id"]).column(0).to_pylist())
    assert {i for i in ids if i.startswith("triviaqa:")} == {"triviaqa:t0", "triviaqa:t1"}
