"""Detection: metrics, random-neuron draws, balancing, judging, token statistics, risk–coverage, and
the whole stage on a tiny random model (run directory built in the test)."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hneurons.detection.eval_sets import EVAL_SETS, balance
from hneurons.detection.methods import BASELINES, EvalData, TrainData, fit_threshold
from hneurons.detection.metrics import score_metrics, selective_answering
from hneurons.detection.token_stats import token_stats
from hneurons.labelling.verdicts import judge_response, refusal_phrase
from hneurons.stats import random_neuron_draws
from hneurons.core.features import ExtractOptions, FeatureItem
from hneurons.probe.estimator import HNeuronProbe, build_rows
from tests.helpers import bpe_tokenizer, tiny_llama

# ------------------------------------------------------------------------------------ metrics


def test_score_metrics_hand_example():
    y = [0, 0, 1, 1]
    s = np.array([0.1, 0.4, 0.35, 0.8])
    m = score_metrics(y, s, 0.5, n_boot=200, seed=0)
    # Pairs (pos, neg): (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) → 3/4.
    assert m["auroc"] == pytest.approx(0.75)
    # p > 0.5 predicts [0, 0, 0, 1] → 3 of 4 right.
    assert m["accuracy"] == pytest.approx(0.75)
    # Prevalence threshold: top-2 scores (0.8, 0.4) predicted positive → [0,1,0,1] → 2/4.
    assert m["accuracy_prevalence"] == pytest.approx(0.5)
    for key in ("accuracy", "auroc", "accuracy_prevalence"):
        lo, hi = m[f"{key}_ci"]
        assert lo <= m[key] <= hi
    assert m["n"] == 4


def test_score_metrics_draws_mean_and_sd():
    y = np.array([0, 0, 1, 1])
    s = np.column_stack([[0.1, 0.2, 0.8, 0.9], [0.9, 0.8, 0.2, 0.1]])  # AUROC 1 and 0
    m = score_metrics(y, s, 0.5, n_boot=50, seed=1)
    assert m["auroc"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["draws"] == 2
    assert m["auroc_sd"] == pytest.approx(np.std([1.0, 0.0], ddof=1))


def test_selective_answering_hand_example():
    correct = [1, 1, 0, 1, 0]
    halluc = np.array([0.1, 0.2, 0.9, 0.3, 0.8])
    rc = selective_answering(correct, halluc, n_boot=100, seed=0)
    # Answer the least suspicious first: items 0, 1, 3, 4, 2 → correct 1, 1, 1, 0, 0.
    assert rc["coverage"] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert rc["accuracy"] == pytest.approx([1, 1, 1, 0.75, 0.6])
    assert rc["aurc"] == pytest.approx((1 + 1 + 1 + 0.75 + 0.6) / 5)
    lo, hi = rc["aurc_ci"]
    assert lo <= rc["aurc"] <= hi


def test_fit_threshold_separates_training_scores():
    s = np.r_[np.linspace(0, 1, 20), np.linspace(2, 3, 20)]
    y = np.r_[np.zeros(20), np.ones(20)].astype(int)
    t = fit_threshold(s, y)
    assert 1.0 < t < 2.0
    assert fit_threshold(-s, y) == np.inf  # wrong direction: never predicts hallucination above t


# ------------------------------------------------------------------------------------ random draws


def test_random_draws_uniform_over_layers_and_exclude_h():
    n_layers, d_ff, k = 4, 50, 10
    h = np.array([3, 7, 51, 120, 199])
    draws = random_neuron_draws(n_layers * d_ff, k, h, n_draws=3000, seed=0)
    assert draws.shape == (3000, k)
    assert not np.isin(draws, h).any()
    assert all(len(set(d)) == k for d in draws[:100])
    hist = np.bincount((draws // d_ff).ravel(), minlength=n_layers) / draws.size
    pool = np.array([d_ff - np.sum(h // d_ff == layer) for layer in range(n_layers)])
    np.testing.assert_allclose(hist, pool / pool.sum(), atol=0.01)
    np.testing.assert_array_equal(draws, random_neuron_draws(n_layers * d_ff, k, h, n_draws=3000, seed=0))
    assert not np.array_equal(draws, random_neuron_draws(n_layers * d_ff, k, h, n_draws=3000, seed=1))


def _synthetic_train(seed=0, n=60, n_layers=3, d_ff=20, h_cols=(5, 33)):
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n // 2), np.ones(n // 2)].astype(int)
    ans = rng.random((n, n_layers * d_ff)) * 0.01
    oth = rng.random((n, n_layers * d_ff)) * 0.01
    for c in h_cols:
        ans[:, c] += 0.02 * y
    X, yy, _ = build_rows(ans, oth, y, "3-vs-1")
    probe = HNeuronProbe(C=1e4, mode="3-vs-1", d_ff=d_ff).fit(X, yy)
    return TrainData(ans, oth, y, probe, "3-vs-1", d_ff, n_layers, None, random_draws=5, seed=seed)


def test_random_baseline_same_k_excludes_h_and_h_probe_uses_only_h_columns():
    train = _synthetic_train()
    h = np.flatnonzero(train.probe.coef_ > 0)
    assert h.size >= 1
    rnd = BASELINES["random"].fit(train)
    assert rnd.info["k"] == h.size and rnd.info["draws"] == 5
    hp = BASELINES["h_neurons"].fit(train)
    X = train.answer[:10].copy()
    s = hp.score(EvalData(X))
    others = np.setdiff1d(np.arange(X.shape[1]), h)
    X2 = X.copy()
    X2[:, others] = 123.0
    np.testing.assert_allclose(hp.score(EvalData(X2)), s)
    r = rnd.score(EvalData(X))
    assert r.shape == (10, 5)
    X3 = X.copy()
    X3[:, h] = 123.0  # H columns never enter a random probe
    np.testing.assert_allclose(rnd.score(EvalData(X3)), r)
    # On the data it was built from, the H refit separates far better than random neurons.
    y = train.labels
    from hneurons.stats import auroc

    assert auroc(y, hp.score(EvalData(train.answer))) > 0.9
    best = BASELINES["best_layer"].fit(train)
    assert best.info["layer"] in (0, 1)  # the layers holding the informative columns 5 and 33


# ------------------------------------------------------------------------------------ balancing


def test_balance_downsamples_majority_reproducibly():
    labels = [0] * 10 + [1] * 3
    b = balance(labels, per_class=5, min_per_class=2, seed=0)
    assert b.reason is None and b.kept == {"0": 3, "1": 3} and b.available == {"0": 10, "1": 3}
    assert set(range(10, 13)) <= set(b.indices.tolist())
    assert np.array_equal(b.indices, balance(labels, 5, 2, seed=0).indices)
    assert list(b.indices) == sorted(b.indices)
    capped = balance([0] * 10 + [1] * 8, per_class=5, min_per_class=2, seed=0)
    assert capped.kept == {"0": 5, "1": 5} and capped.indices.size == 10


def test_balance_too_few_gives_reason_with_counts():
    b = balance([0] * 7 + [1], per_class=5, min_per_class=2, seed=0)
    assert b.indices.size == 0
    assert "7 faithful" in b.reason and "1 hallucinated" in b.reason and "min_per_class" in b.reason


# ------------------------------------------------------------------------------------ judging


def test_judge_qa_and_nonexist():
    qa, ne = EVAL_SETS["triviaqa"], EVAL_SETS["nonexist"]
    assert judge_response(qa, "Capital of France?", "Paris.", ["Paris"]).label == 0
    assert judge_response(qa, "Capital of France?", "Rome.", ["Paris"]).label == 1
    assert judge_response(qa, "Capital of France?", "I don't know.", ["Paris"]).label is None
    v = judge_response(ne, "Who makes volor pri octacap?", "I’m not aware of any drug by that name.", [])
    assert (v.label, v.answer) == (0, "not aware of")
    assert judge_response(ne, "Who makes volor pri octacap?", "Pfizer.", []).label == 1
    assert refusal_phrase("Sorry, that company doesn’t exist.") == "doesn’t exist"  # as written (curly)


@pytest.mark.parametrize("name", ["triviaqa", "nonexist"])
@pytest.mark.parametrize("empty", ["", "  ", "\n \t"])
def test_empty_answer_is_no_answer_never_hallucinated(name, empty):
    # a base model that stopped before answering said nothing: dropped, not labelled (not even in NonExist)
    v = judge_response(EVAL_SETS[name], "Capital of France?", empty, ["Paris"])
    assert (v.verdict, v.label) == ("no_answer", None)


# ------------------------------------------------------------------------------------ token stats


def test_token_stats_from_the_cett_pass_match_direct_logits(tmp_path):
    # the statistics come out of the features forward (batched, right-padded, logits only at the
    # answer positions of the batch) and must equal a plain single-sequence forward's
    from hneurons.core.arch import resolve
    from hneurons.core.store import FeatureStore

    tok = bpe_tokenizer()
    model = tiny_llama(tok)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(5, len(tok), (n,), generator=g).tolist() for n in (12, 7, 9)]
    spans = [(9, 11), (2, 6), (5, 8)]  # different positions, so the batch keeps a union of them
    items = [FeatureItem(f"q{i}", tuple(s), spans[i], (spans[i][0] - 1, len(s))) for i, s in enumerate(seqs)]
    store = FeatureStore(tmp_path / "store").extract(model, resolve(model), items, model_fingerprint="m",
                                                     options=ExtractOptions(("answer",), batch_size=2, progress=False,
                                                                            stats_layer=1))
    layer, arrays = store.load_stats()
    st = token_stats(items, layer, arrays)
    assert st.residual_layer == 1
    for i, s in enumerate(seqs):
        with torch.no_grad():
            out = model(input_ids=torch.tensor([s]), output_hidden_states=True)
        logits = out.logits[0].double()
        a0, a1 = items[i].answer
        lp = [torch.log_softmax(logits[t - 1], -1)[s[t]].item() for t in range(a0, a1)]
        ent = []
        for t in range(a0, a1):
            p = torch.softmax(logits[t - 1], -1)
            ent.append(-(p * p.log()).sum().item())
        assert st.logprob[i] == pytest.approx(np.mean(lp), abs=1e-4)
        assert st.entropy[i] == pytest.approx(np.mean(ent), abs=1e-4)
        assert st.length[i] == len(s) - spans[i][0] + 1
        np.testing.assert_allclose(st.residual[i], out.hidden_states[1][0, a0:a1].mean(0).numpy(), atol=1e-5)


def test_store_without_token_stats_names_the_rebuild(tmp_path):
    from hneurons.core.arch import resolve
    from hneurons.errors import StageError
    from hneurons.core.store import FeatureStore

    tok = bpe_tokenizer()
    model = tiny_llama(tok)
    items = [FeatureItem("q0", tuple(range(5, 13)), (4, 6), (3, 8))]
    store = FeatureStore(tmp_path / "features" / "train").extract(model, resolve(model), items, model_fingerprint="m",
                                                                  options=ExtractOptions(progress=False))
    with pytest.raises(StageError, match="no answer-token statistics.*hneurons features"):
        store.load_stats()


# ------------------------------------------------------------------------------------ the stage


def _stage_ctx(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hneurons.core.arch import resolve
    from hneurons.config import load_config
    from hneurons.data import Record
    from hneurons.core.store import FeatureStore
    from hneurons.core.models import LoadedModel
    from hneurons.rundir import RunDir
    from hneurons.text.spans import build_sequence, whole_response_span
    from hneurons.stages import detect as stage

    tok = bpe_tokenizer()
    model = tiny_llama(tok)
    layout = resolve(model)
    lm = LoadedModel(model, tok, layout, "tiny", "none", "fp-tiny", torch.device("cpu"), torch.float32)
    cfg = load_config("smoke", overrides={"detect.sets": ["triviaqa", "nq_open"], "detect.n_questions": 8,
                                          "detect.per_class": 3, "detect.min_per_class": 2, "detect.n_boot": 50,
                                          "features.batch_size": 4})
    rd = RunDir(tmp_path / "run")
    suffix = cfg.responses.suffix
    answers = ["Paris", "Rome", "Jupiter", "Neptune", "William Shakespeare", "Eugene O'Neill"]
    rows, items = [], []
    for i in range(16):
        prompt = f"Who wrote question {i}? {suffix}"
        resp = answers[i % len(answers)] + (" is it" if i % 2 else "")
        seq = build_sequence(tok, prompt, resp)
        span = whole_response_span(seq)
        rows.append({"qid": f"t{i}", "question": f"Who wrote question {i}?", "prompt": prompt, "response": resp,
                     "label": i % 2, "split": "train", "span_start": span.start, "span_end": span.end,
                     "span_status": "ok"})
        items.append(FeatureItem(f"t{i}", tuple(seq.input_ids), (span.start, span.end), (seq.prompt_end, seq.response_end)))
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), rd.path("responses", "labelled.parquet"))
    store = FeatureStore(rd.root / "features" / "train").extract(model, layout, items, model_fingerprint="fp-tiny",
                                                                 options=ExtractOptions(progress=False, stats_layer=layout.n_layers // 2))
    _, feats = store.load()
    X, y, _ = build_rows(feats["answer"], feats["other"], np.array([r["label"] for r in rows]), "3-vs-1")
    probe = HNeuronProbe(C=1e4, mode="3-vs-1", d_ff=layout.d_ff).fit(X, y)
    assert probe.n_positive_ >= 1
    probe.save(rd.path("probe", "probe.safetensors"))

    questions = {
        "triviaqa": [Record(f"tq{i}", f"What is the capital of France {i}?", ("Paris",)) for i in range(8)],
        "nq_open": [Record(f"nq{i}", f"Which planet is largest {i}?", ("Jupiter",)) for i in range(4)],
    }
    monkeypatch.setattr(stage, "_questions", lambda ctx, es: questions[es.name])
    real_sample = stage._sample

    def fake_sample(ctx, name, recs):
        if name != "triviaqa":
            return real_sample(ctx, name, recs)  # the tiny random model: never right
        texts = ["Paris", "Rome", "It is Paris.", "Neptune", "Paris!", "Rome it is", "paris", "Saturn"]
        return {r.id: {"qid": r.id, "text": t} for r, t in zip(recs, texts)}

    monkeypatch.setattr(stage, "_sample", fake_sample)
    ctx = SimpleNamespace(cfg=cfg, rundir=rd, model=lm, model_fingerprint="fp-tiny", log=lambda m: None)
    return stage, ctx


def test_detect_stage_end_to_end(tmp_path, monkeypatch):
    stage, ctx = _stage_ctx(tmp_path, monkeypatch)
    assert stage.inputs(ctx)["files"]["probe"] is not None
    summary = stage.run(ctx)
    d = ctx.rundir.root / "detect"
    res = json.loads((d / "detect.json").read_text())
    assert "nq_open" in res["skipped"] and "0 faithful" in res["skipped"]["nq_open"]
    tq = res["sets"]["triviaqa"]
    assert tq["n"] == 6 and tq["n_per_class"] == {"0": 3, "1": 3}
    assert set(tq["methods"]) == set(BASELINES) == set(res["methods"])
    for m in tq["methods"].values():
        assert m["n"] == 6 and 0 <= m["accuracy"] <= 1 and len(m["accuracy_ci"]) == 2
    assert tq["methods"]["random"]["draws"] == ctx.cfg.detect.random_draws
    with (d / "scores.csv").open() as fh:
        score_rows = list(csv.DictReader(fh))
    assert len(score_rows) == 6 * len(BASELINES)
    assert {r["set"] for r in score_rows} == {"triviaqa"}
    rc = json.loads((d / "risk_coverage.json").read_text())
    assert rc["n"] == 8 and rc["base_accuracy"] == pytest.approx(0.5)
    assert rc["methods"]["h_neurons"]["coverage"][-1] == pytest.approx(1.0)
    assert (d / "items_triviaqa.parquet").is_file() and (d / "items_nq_open.parquet").is_file()
    assert (d / "samples_nq_open.jsonl").is_file()
    idx = json.loads((ctx.rundir.root / "features" / "detect_triviaqa" / "index.json").read_text())
    assert idx["n"] == 8 and idx["regions"] == ["answer"]
    assert summary["skipped"] == res["skipped"]
    # Re-running reuses the sampled responses and the features.
    lines = (d / "samples_nq_open.jsonl").read_text().count("\n")
    stage.run(ctx)
    assert (d / "samples_nq_open.jsonl").read_text().count("\n") == lines


def test_nonexist_has_its_own_size(tmp_path):
    """detect.nonexist_questions sizes the constructed set; the packaged sets take detect.n_questions."""
    from hneurons.config import load_config
    from hneurons.rundir import RunDir
    from hneurons.stages import detect as stage

    cfg = load_config("smoke", overrides={"detect.n_questions": 8, "detect.nonexist_questions": 5})
    ctx = SimpleNamespace(cfg=cfg, rundir=RunDir(tmp_path / "run"))
    assert len(stage._questions(ctx, EVAL_SETS["nonexist"])) == 5
    assert len(stage._questions(ctx, EVAL_SETS["triviaqa"])) == 8
    cfg.detect.nonexist_questions = None
    assert len(stage._questions(ctx, EVAL_SETS["nonexist"])) == 8  # None: n_questions, rebuilt larger


def test_risk_coverage_on_the_first_items_only(tmp_path, monkeypatch):
    """detect.risk_coverage_items = 4: selective answering over the first 4 judged items (question order);
    features cover them and the balanced set, nothing else."""
    import pyarrow.parquet as pq

    stage, ctx = _stage_ctx(tmp_path, monkeypatch)
    ctx.cfg.detect.risk_coverage_items = 4
    stage.run(ctx)
    d = ctx.rundir.root / "detect"
    rc = json.loads((d / "risk_coverage.json").read_text())
    # Paris, Rome, It is Paris., Neptune: two right, two wrong
    assert rc["n"] == 4 and rc["base_accuracy"] == pytest.approx(0.5) and "first 4 of 8" in rc["items"]
    items = pq.read_table(d / "items_triviaqa.parquet").to_pylist()
    wanted = {r["qid"] for r in items if r["balanced"]} | {f"tq{i}" for i in range(4)}
    idx = json.loads((ctx.rundir.root / "features" / "detect_triviaqa" / "index.json").read_text())
    assert idx["n"] == len(wanted)
    assert json.loads((d / "detect.json").read_text())["sets"]["triviaqa"]["n"] == 6  # detection unchanged


@pytest.mark.parametrize("takes_positions", [True, False])
def test_token_stats_reject_an_answer_at_the_first_token(takes_positions, monkeypatch):
    # token 0 has no logits predicting it; the check must hold whether or not the model's forward
    # takes logits_to_keep (without it, position −1 would silently read the last logits)
    from hneurons.core.arch import resolve
    from hneurons.errors import DataError
    from hneurons.core.features import extract_cett

    tok = bpe_tokenizer()
    model = tiny_llama(tok)
    if not takes_positions:
        forward = model.forward
        monkeypatch.setattr(model, "forward", lambda input_ids, attention_mask, use_cache, output_hidden_states=False:
                            forward(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache,
                                    output_hidden_states=output_hidden_states))
    item = FeatureItem("q0", tuple(range(5, 13)), (0, 2), (0, 8))
    with pytest.raises(DataError, match="q0: answer span"):
        extract_cett(model, resolve(model), [item], regions=("answer",), progress=False, stats_layer=1)
