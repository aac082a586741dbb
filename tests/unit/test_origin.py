"""Origin analysis on constructed base/instruct pairs: tiny random models whose differences we plant."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from hneurons.core.arch import resolve
from hneurons.data.registry import Record
from hneurons.detection.eval_sets import EVAL_SETS
from hneurons.detection.methods import TrainData
from hneurons.errors import ConfigError, DataError
from hneurons.core.hooks import capture_cett
from hneurons.judges.rules import DEFAULT_REFUSAL_PHRASES
from hneurons.labelling.items import SpanRule, judge_and_locate
from hneurons.origin.drift import cosine_drift, drift_from_raw, drift_test, neuron_drift, neuron_drift_from_files
from hneurons.origin.transfer import random_transfer_scores, transfer_scores, transfer_summary
from hneurons.probe.estimator import HNeuronProbe
from hneurons.text.prompts import render_prompt
from hneurons.stats import auroc

L, D, F = 3, 32, 64


def tiny_llama(n_layers: int = L, d_ff: int = F, seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=D, intermediate_size=d_ff, num_hidden_layers=n_layers, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=97, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2(seed: int = 0) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_embd=D, n_layer=2, n_head=4, vocab_size=97, n_positions=64)
    return GPT2LMHeadModel(cfg).eval()


def finetune_noise(model: torch.nn.Module, scale: float, seed: int, skip: set[int] = frozenset()) -> None:
    """Small noise on every FFN neuron's up/gate rows and down columns (a 'fine-tuning' step),
    except the flat indices in ``skip``, which stay bit-identical."""
    g = torch.Generator().manual_seed(seed)
    lay = resolve(model)
    with torch.no_grad():
        for layer in range(lay.n_layers):
            keep = torch.tensor([f % lay.d_ff for f in skip if f // lay.d_ff == layer], dtype=torch.long)
            for w in (lay.up_weight(layer), lay.gate_weight(layer), lay.down_weight(layer).t()):
                if w is None:
                    continue
                noise = torch.randn(w.shape, generator=g) * scale * w.abs().mean()
                noise[keep] = 0
                w.add_(noise)


def replace_neurons(model: torch.nn.Module, flat: list[int], seed: int, mix: float = 1.0,
                    which: tuple[str, ...] = ("up", "down")) -> None:
    """Move the chosen weight vectors (up/gate rows, down columns) of ``flat`` neurons towards
    fresh random vectors of the same norm scale (``mix`` = 1 replaces them)."""
    g = torch.Generator().manual_seed(seed)
    lay = resolve(model)
    with torch.no_grad():
        for f in flat:
            layer, j = divmod(f, lay.d_ff)
            get = {"up": lay.up_weight, "gate": lay.gate_weight, "down": lambda i: lay.down_weight(i).t()}
            mats = [get[w](layer) for w in which]
            for w in mats:
                row = w[j]
                new = torch.randn(row.shape, generator=g) * row.norm() / row.numel() ** 0.5
                row.copy_((1 - mix) * row + mix * new)


def test_cosine_drift_matches_hand_formula_and_zero_rows():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    b[3] = a[3] * 2.5  # parallel → drift 0
    b[4] = -a[4]  # antiparallel → drift 2
    a[5] = 0.0  # one zero row → 1
    a[6] = b[6] = 0.0  # both zero → 0
    got = cosine_drift(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
    ref = 1 - (a[:3] * b[:3]).sum(1) / (np.linalg.norm(a[:3], axis=1) * np.linalg.norm(b[:3], axis=1))
    np.testing.assert_allclose(got[:3], ref[:3], rtol=1e-6)
    np.testing.assert_allclose(got[3:], [0.0, 2.0, 1.0, 0.0], atol=1e-7)


def test_cosine_drift_precise_for_nearly_parallel_rows():
    a = torch.ones(1, 1000, dtype=torch.float64)
    b = a.clone()
    b[0, 0] += 1e-4  # 1 − cos ≈ 5e-12: naive float32 1 − cos would give 0
    got = cosine_drift(a, b)[0]
    x, y = a.numpy()[0], b.numpy()[0]
    exact = 0.5 * np.sum((x / np.linalg.norm(x) - y / np.linalg.norm(y)) ** 2)
    assert got == pytest.approx(exact, rel=1e-6)
    assert got > 0


def test_zscores_ranks_hand_computed():
    up = np.array([0.0, 1.0, 2.0, 3.0])
    down = np.array([3.0, 3.0, 0.0, 6.0])
    r = drift_from_raw(up, down, n_layers=1, d_ff=4)
    z_up = (up - up.mean()) / up.std()
    z_down = (down - down.mean()) / down.std()
    np.testing.assert_allclose(r.drift, (z_up + z_down) / 2)
    # combined: [-0.905, -0.258, -0.378, 1.541] → order 3, 1, 2, 0
    np.testing.assert_array_equal(r.rank, [3, 1, 2, 0])
    np.testing.assert_allclose(r.norm_rank, [1.0, 1 / 3, 2 / 3, 0.0])
    # per-layer scope z-scores each layer on its own
    up2 = np.r_[up, up * 100]
    down2 = np.r_[down, down * 100]
    rl = drift_from_raw(up2, down2, n_layers=2, d_ff=4, scope="per_layer")
    np.testing.assert_allclose(rl.drift[:4], rl.drift[4:])
    with pytest.raises(ConfigError, match="scope"):
        drift_from_raw(up, down, 1, 4, scope="bogus")


def test_planted_neurons_rank_on_top_and_are_detected():
    inst = tiny_llama()
    base = copy.deepcopy(inst)
    rng = np.random.default_rng(1)
    planted = sorted(rng.choice(L * F, size=12, replace=False).tolist())
    finetune_noise(inst, 0.05, seed=2)
    replace_neurons(inst, planted, seed=3)
    r = neuron_drift(resolve(inst), resolve(base))
    assert r.n_neurons == L * F and r.gated
    top = set(np.argsort(r.rank)[: len(planted)].tolist())
    assert top == set(planted)
    assert r.norm_rank[planted].max() <= (len(planted) - 1) / (L * F - 1) + 1e-12
    res = drift_test(r, planted, permutations=2000, seed=0)
    assert res["mean_rank_h"] < 0.05
    assert res["t_p_greater"] < 1e-3 and res["t_p_two_sided"] < 1e-3
    assert res["t_p"] > 0.99  # the paper's "drift less" direction is clearly not supported
    assert res["perm_p_greater"] < 1e-3 and res["perm_p"] > 0.99
    assert sum(res["hist"]["counts_h"]) == len(planted) and sum(res["hist"]["counts_all"]) == L * F
    # an unperturbed random set sits in the middle
    others = np.setdiff1d(np.arange(L * F), planted)
    null = rng.choice(others, size=60, replace=False)
    res0 = drift_test(r, null, permutations=2000, seed=0)
    assert abs(res0["mean_rank_h"] - 0.5) < 0.12
    assert res0["perm_p_two_sided"] > 0.01


def test_inert_neurons_give_paper_direction():
    """Neurons left untouched by 'fine-tuning' drift least: high normalised rank, small one-sided p."""
    inst = tiny_llama()
    base = copy.deepcopy(inst)
    inert = list(range(5, 5 + 10)) + list(range(F + 20, F + 30))
    finetune_noise(inst, 0.05, seed=4, skip=set(inert))
    r = neuron_drift(resolve(inst), resolve(base))
    np.testing.assert_allclose(r.drift_up[inert], 0.0, atol=1e-12)
    res = drift_test(r, inert, permutations=2000, seed=0)
    assert res["mean_rank_h"] > 0.95
    assert res["t_p"] < 1e-3 and res["perm_p"] < 1e-3


def test_gpt2_conv1d_orientation():
    inst = tiny_gpt2()
    base = copy.deepcopy(inst)
    lay = resolve(inst)
    planted = [3, 77, lay.d_ff + 5, lay.d_ff + 100]
    finetune_noise(inst, 0.05, seed=5)
    # perturb the stored Conv1D weights directly: neuron j = column j of c_fc, row j of c_proj
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for f in planted:
            layer, j = divmod(f, lay.d_ff)
            mlp = inst.transformer.h[layer].mlp
            mlp.c_fc.weight[:, j] = torch.randn(D, generator=g) * 0.02
            mlp.c_proj.weight[j, :] = torch.randn(D, generator=g) * 0.02
    r = neuron_drift(resolve(inst), resolve(base))
    assert not r.gated and np.isnan(r.drift_gate).all()
    assert set(np.argsort(r.rank)[: len(planted)].tolist()) == set(planted)


def test_mismatched_models_are_refused():
    inst = tiny_llama()
    with pytest.raises(ConfigError, match=r"number of layers is 2 .* but 3"):
        neuron_drift(resolve(inst), resolve(tiny_llama(n_layers=2)))
    with pytest.raises(ConfigError, match=r"d_ff\) is 48 .* but 64"):
        neuron_drift(resolve(inst), resolve(tiny_llama(d_ff=48)))
    with pytest.raises(ConfigError, match=r"model_type\) is 'gpt2' .* but 'llama'"):
        neuron_drift(resolve(inst), resolve(tiny_gpt2()))


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_drift_from_files_equals_in_memory(tmp_path, make):
    inst = make()
    base = copy.deepcopy(inst)
    finetune_noise(inst, 0.1, seed=7)
    inst.save_pretrained(tmp_path / "inst", safe_serialization=True)
    base.save_pretrained(tmp_path / "base", safe_serialization=True)
    mem = neuron_drift(resolve(inst), resolve(base))
    disk = neuron_drift_from_files(tmp_path / "inst", tmp_path / "base")
    for name in ("drift_up", "drift_down", "drift", "norm_rank"):
        np.testing.assert_allclose(getattr(disk, name), getattr(mem, name), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(disk.drift_gate, mem.drift_gate, equal_nan=True)


def test_drift_from_files_sharded_and_mismatch(tmp_path):
    inst = tiny_llama()
    base = copy.deepcopy(inst)
    finetune_noise(inst, 0.1, seed=8)
    inst.save_pretrained(tmp_path / "inst", safe_serialization=True, max_shard_size="20KB")
    base.save_pretrained(tmp_path / "base", safe_serialization=True)
    assert (tmp_path / "inst" / "model.safetensors.index.json").is_file()
    mem = neuron_drift(resolve(inst), resolve(base))
    disk = neuron_drift_from_files(tmp_path / "inst", tmp_path / "base")
    np.testing.assert_allclose(disk.drift, mem.drift, rtol=1e-12, atol=1e-15)
    tiny_llama(n_layers=2).save_pretrained(tmp_path / "small", safe_serialization=True)
    with pytest.raises(ConfigError, match="number of layers"):
        neuron_drift_from_files(tmp_path / "inst", tmp_path / "small")


def test_drift_table_columns():
    r = drift_from_raw(np.arange(6.0), np.arange(6.0)[::-1] ** 2, n_layers=2, d_ff=3)
    t = r.table([1, 4])
    assert t.column_names == ["layer", "neuron", "drift_up", "drift_gate", "drift_down", "z_up", "z_down",
                              "drift", "rank", "norm_rank", "is_h"]
    assert t.column("layer").to_pylist() == [0, 0, 0, 1, 1, 1]
    assert t.column("is_h").to_pylist() == [False, True, False, False, True, False]
    assert t.column("drift_gate").null_count == 6
    with pytest.raises(ConfigError, match="out of range"):
        r.table([6])


# --- transfer ----------------------------------------------------------------------------------


def answer_features(model: torch.nn.Module, ids: torch.Tensor) -> np.ndarray:
    """Mean CETT over the last 3 positions ('answer span') of each sequence, flat [n, L·d_ff]."""
    lay = resolve(model)
    masks = torch.zeros(ids.shape[0], 1, ids.shape[1])
    masks[:, 0, -3:] = 1
    with capture_cett(lay, masks) as out, torch.no_grad():
        model(input_ids=ids)
    return out[:, :, 0, :].reshape(ids.shape[0], -1).numpy()


def planted_probe(coef: np.ndarray, intercept: float) -> HNeuronProbe:
    """An HNeuronProbe with given weights (as HNeuronProbe.load restores one)."""
    p = HNeuronProbe(d_ff=F)
    p.coef_, p.intercept_ = np.asarray(coef, dtype=np.float64), float(intercept)
    p.classes_, p.n_features_in_ = np.array([0, 1]), coef.size
    return p


def test_transfer_holds_for_unrelated_changes_and_degrades_with_h_changes():
    inst = tiny_llama(seed=11)
    ids = torch.randint(0, 97, (240, 10), generator=torch.Generator().manual_seed(12))
    h = [2 * F + 3, 2 * F + 17, 2 * F + 40, 2 * F + 51]  # last layer: its inputs are unaffected below
    X_inst = answer_features(inst, ids)
    coef = np.zeros(L * F)
    coef[h] = 50.0
    raw = X_inst @ coef
    probe = planted_probe(coef, -float(np.median(raw)))
    y = (raw > np.median(raw)).astype(int)  # labels the planted probe separates perfectly
    assert auroc(y, transfer_scores(probe, X_inst)) == 1.0

    unrelated = copy.deepcopy(inst)
    others = [2 * F + j for j in range(F) if 2 * F + j not in h]
    replace_neurons(unrelated, others[::4], seed=13, mix=0.3)
    X_unrel = answer_features(unrelated, ids)
    au_unrel = auroc(y, transfer_scores(probe, X_unrel))

    aurocs = []
    for mix in (0.3, 0.6, 1.0):  # the H-Neurons' input weights move further and further
        b = copy.deepcopy(inst)
        replace_neurons(b, h, seed=14, mix=mix, which=("up", "gate"))
        aurocs.append(auroc(y, transfer_scores(probe, answer_features(b, ids))))
    assert au_unrel > 0.95
    assert au_unrel > aurocs[0] > aurocs[1] > aurocs[2]
    assert aurocs[2] < 0.7

    # the random control: probes refit on 4 random non-H neurons of the instruct features
    train = TrainData(X_inst, None, y, probe, "1-vs-1", F, L)
    rand = random_transfer_scores(train, X_unrel, h, draws=3, seed=0)
    assert rand.shape == (240, 3)
    m = transfer_summary(y, transfer_scores(probe, X_unrel), rand, n_boot=200, seed=0)
    assert m["auroc"] == pytest.approx(au_unrel)
    assert m["auroc_ci"][0] <= m["auroc"] <= m["auroc_ci"][1]
    assert m["n"] == 240 and m["n_per_class"] == {"0": 120, "1": 120}
    assert m["random"]["draws"] == 3
    assert m["random_auroc"] == pytest.approx(np.mean([auroc(y, c) for c in rand.T]))
    assert m["random_auroc"] < m["auroc"]


def test_transfer_scores_refuses_bad_features():
    probe = planted_probe(np.array([1.0, -1.0]), 0.5)
    X = np.array([[0.0, 1.0], [2.0, 0.0]])
    np.testing.assert_allclose(transfer_scores(probe, X), 1 / (1 + np.exp(-np.array([-0.5, 2.5]))))
    with pytest.raises(DataError, match="2 weights"):
        transfer_scores(probe, np.zeros((2, 3)))
    with pytest.raises(DataError, match="NaN"):
        transfer_scores(probe, np.array([[np.nan, 0.0]]))


def test_judge_and_locate_plain_prompt():
    from tests.helpers import bpe_tokenizer

    tok = bpe_tokenizer(chat=False)
    es = EVAL_SETS["triviaqa"]
    recs = [Record("q1", "What is the capital of France?", ("Paris",)),
            Record("q2", "Who wrote Hamlet?", ("William Shakespeare", "Shakespeare")),
            Record("q3", "What is the largest planet?", ("Jupiter",))]
    items = judge_and_locate(SpanRule(tok, False, "phrase", None), es, recs,
                             ["Paris, of course", "Eugene O'Neill", "I don't know"], DEFAULT_REFUSAL_PHRASES)
    assert [it.label for it in items] == [0, 1, None]
    assert [it.verdict for it in items] == ["correct", "wrong", "refusal"]
    first, second = items[0].feature, items[1].feature
    assert render_prompt(tok, recs[0].question.strip(), chat=False) == "What is the capital of France?\nAnswer:"
    # the feature sequence is the plain prompt followed by the answer, and the span is the alias
    assert tok.decode(first.input_ids, skip_special_tokens=True).startswith("What is the capital of France?\nAnswer: Paris")
    assert tok.decode(first.input_ids[first.answer[0]:first.answer[1]]).strip() == "Paris"
    assert tok.decode(second.input_ids[second.answer[0]:second.answer[1]]).strip() == "Eugene O'Neill"
    assert items[2].feature is None and items[2].span_status.startswith("dropped")


# --- the stage -----------------------------------------------------------------------------------


def test_stage_not_run_without_base_model(tmp_path):
    from hneurons.config import Config
    from hneurons.pipeline import Context
    from hneurons.rundir import RunDir
    from hneurons.stages import origin as stage

    ctx = Context(Config(), RunDir(tmp_path / "run"), log=lambda m: None)
    out = stage.run(ctx)
    assert out == {"status": "not run", "reason": stage.NO_BASE_REASON}
    written = json.loads((tmp_path / "run" / "origin" / "origin.json").read_text())
    assert written == {"status": "not run", "reason": stage.NO_BASE_REASON}
    assert "origin.base_model" in stage.NO_BASE_REASON
    assert stage.inputs(ctx) == {"origin": ctx.cfg.section("origin")}


@pytest.mark.parametrize("streamed", [True, False])
def test_stage_end_to_end(tmp_path, monkeypatch, streamed):
    import pyarrow as pa
    import pyarrow.parquet as pq

    import hneurons.data
    from hneurons.config import load_config
    from hneurons.core.features import ExtractOptions, FeatureItem
    from hneurons.core.store import FeatureStore
    from hneurons.core.models import fingerprint
    from hneurons.pipeline import Context
    from hneurons.probe.estimator import build_rows
    from hneurons.rundir import RunDir
    from hneurons.text.spans import build_sequence, whole_response_span
    from hneurons.stages import origin as stage
    from tests.helpers import bpe_tokenizer
    from tests.helpers import tiny_llama as tok_llama

    tok = bpe_tokenizer()
    inst = tok_llama(tok)
    base = copy.deepcopy(inst)
    finetune_noise(inst, 0.05, seed=21)
    for m, d, t in ((inst, "inst", tok), (base, "base", bpe_tokenizer(chat=False))):
        m.save_pretrained(tmp_path / d, safe_serialization=True)
        t.save_pretrained(tmp_path / d)
    cfg = load_config("smoke", overrides={
        "model.name": str(tmp_path / "inst"), "model.device": "cpu", "model.dtype": "float32",
        "origin.base_model": str(tmp_path / "base"), "origin.sets": ["triviaqa", "nq_open"], "origin.n_questions": 8,
        "origin.permutations": 200, "detect.per_class": 3, "detect.min_per_class": 2, "detect.n_boot": 50,
        "detect.random_draws": 3, "detect.max_new_tokens": 4, "features.batch_size": 4})
    rd = RunDir(tmp_path / "run")
    fp = fingerprint(str(tmp_path / "inst"))
    lay = resolve(inst)
    rows, items = [], []
    for i in range(16):
        prompt = f"Who wrote question {i}? {cfg.responses.suffix}"
        resp = ["Paris", "Rome", "Jupiter", "Neptune"][i % 4] + (" is it" if i % 2 else "")
        seq = build_sequence(tok, prompt, resp)
        span = whole_response_span(seq)
        rows.append({"qid": f"t{i}", "label": i % 2})
        items.append(FeatureItem(f"t{i}", tuple(seq.input_ids), (span.start, span.end), (seq.prompt_end, seq.response_end)))
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), rd.path("responses", "labelled.parquet"))
    _, feats = FeatureStore(rd.root / "features" / "train").extract(
        inst, lay, items, model_fingerprint=fp, options=ExtractOptions(progress=False)).load()
    X, y, _ = build_rows(feats["answer"], feats["other"], np.array([r["label"] for r in rows]), "3-vs-1")
    probe = HNeuronProbe(C=1e4, mode="3-vs-1", d_ff=lay.d_ff).fit(X, y)
    probe.save(rd.path("probe", "probe.safetensors"))
    h = [{"layer": int(f // lay.d_ff), "neuron": int(f % lay.d_ff), "weight": float(probe.coef_[f])}
         for f in np.flatnonzero(probe.coef_ > 0)]
    rd.path("probe", "h_neurons.json").write_text(json.dumps({"neurons": h}))

    questions = {"triviaqa_test": [Record(f"tq{i}", f"What is the capital of France {i}?", ("Paris",)) for i in range(8)],
                 "nq_open": [Record(f"nq{i}", f"Which planet is largest {i}?", ("Jupiter",)) for i in range(4)]}
    monkeypatch.setattr(hneurons.data, "load_dataset", lambda name, limit=None: questions[name][:limit])
    real_sample = stage._sample

    def fake_sample(ctx, base_lm, name, recs):
        if name != "triviaqa":
            return real_sample(ctx, base_lm, name, recs)  # the tiny random base model: never right
        texts = ["Paris", "Rome", "It is Paris.", "Neptune", "Paris!", "Rome it is", "paris", "Saturn"]
        return {r.id: {"qid": r.id, "text": t} for r, t in zip(recs, texts)}

    monkeypatch.setattr(stage, "_sample", fake_sample)
    if not streamed:
        monkeypatch.setattr(stage, "_safetensors_dir", lambda p: False)
    logs: list[str] = []
    ctx = Context(cfg, rd, log=logs.append)
    assert stage.inputs(ctx)["base"] == fingerprint(str(tmp_path / "base"))
    summary = stage.run(ctx)
    assert (ctx._model is None) == streamed  # streaming never loads the instruct weights

    res = json.loads(rd.path("origin", "origin.json").read_text())
    assert res["status"] == "done" and res["drift"]["source"] == ("safetensors" if streamed else "loaded models")
    tq = res["transfer"]["triviaqa"]
    assert tq["n"] == 6 and tq["n_per_class"] == {"0": 3, "1": 3}
    assert 0 <= tq["auroc"] <= 1 and tq["random"]["draws"] == 3 and tq["random_auroc"] is not None
    assert "nq_open" in res["skipped"] and summary["skipped"] == res["skipped"]
    dr = res["drift"]
    assert dr["n_neurons"] == lay.n_neurons and dr["n_h"] == len(h)
    table = pq.read_table(rd.path("origin", "drift.parquet"))
    assert table.num_rows == lay.n_neurons and sum(table.column("is_h").to_pylist()) == len(h)
    ref = neuron_drift(resolve(inst), resolve(base))
    np.testing.assert_allclose(table.column("drift").to_numpy(), ref.drift, rtol=1e-9, atol=1e-12)
    idx = json.loads((rd.root / "features" / "origin_triviaqa" / "index.json").read_text())
    assert idx["model_fingerprint"] == fingerprint(str(tmp_path / "base")) and idx["n"] == 6
    assert not any("tokenizers differ" in m for m in logs)  # same vocab, only the template differs
    # base items: plain prompt, judged, spans located
    items_t = pq.read_table(rd.path("origin", "items_triviaqa.parquet")).to_pylist()
    assert [r["label"] for r in items_t] == [0, 1, 0, 1, 0, 1, 0, 1]
    assert sum(r["balanced"] for r in items_t) == 6


def test_cosine_drift_leaves_float64_inputs_untouched():
    a = torch.randn(5, 4, dtype=torch.float64)
    b = torch.randn(5, 4, dtype=torch.float64)
    a0, b0 = a.clone(), b.clone()
    cosine_drift(a, b)
    assert torch.equal(a, a0) and torch.equal(b, b0)


def test_tokenizer_difference():
    from hneurons.origin.weights import tokenizer_difference
    from tests.helpers import bpe_tokenizer

    a, b = bpe_tokenizer(), bpe_tokenizer(chat=False)
    assert tokenizer_difference(a, b) is None  # templates differ, vocabularies do not
    b.add_tokens(["<extra_tok>"])
    msg = tokenizer_difference(a, b)
    assert msg is not None and f"base vocab {len(b)}" in msg and "1 only in base" in msg
