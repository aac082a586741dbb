"""CETT extraction against a float64 hand computation, and batching/padding invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hneurons.core.arch import resolve
from hneurons.errors import ConfigError, DataError, FingerprintMismatch
from hneurons.core.features import ExtractOptions, FeatureItem, extract_cett
from hneurons.core.store import FeatureStore, check_finite

QUIET = ExtractOptions(progress=False)


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def hand_cett(model: LlamaForCausalLM, ids: list[int]) -> np.ndarray:
    """[layers, T, d_ff] CETT by explicit float64 matmuls, from the hidden states feeding each MLP."""
    m = model.double()
    out = []
    with torch.no_grad():
        x = torch.tensor([ids])
        captured = {}
        handles = [layer.post_attention_layernorm.register_forward_hook(
            lambda mod, a, o, i=i: captured.__setitem__(i, o)) for i, layer in enumerate(m.model.layers)]
        m(input_ids=x)
        for h in handles:
            h.remove()
        for i, layer in enumerate(m.model.layers):
            xn = captured[i][0]  # [T, d]
            wg, wu, wd = (layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight, layer.mlp.down_proj.weight)
            z = torch.nn.functional.silu(xn @ wg.T) * (xn @ wu.T)  # [T, d_ff]
            h = z @ wd.T  # [T, d]
            cett = z.abs() * wd.norm(dim=0)[None, :] / (h.norm(dim=-1, keepdim=True) + 1e-8)
            out.append(cett.numpy())
    model.float()
    return np.stack(out)


def test_cett_matches_hand_computation() -> None:
    model = tiny_llama()
    ids = [5, 9, 3, 17, 22, 8, 41, 2]
    item = FeatureItem("q", tuple(ids), answer=(5, 7), response=(4, 8))
    got = extract_cett(model, resolve(model), [item], regions=("answer", "other", "prompt"),
                       other_scope="full_sequence", progress=False)
    ref = hand_cett(model, ids)  # [L, T, F]
    exp_answer = ref[:, 5:7].mean(1).reshape(-1)
    exp_other = np.concatenate([ref[:, :5], ref[:, 7:]], axis=1).mean(1).reshape(-1)
    exp_prompt = ref[:, :4].mean(1).reshape(-1)
    for name, exp in [("answer", exp_answer), ("other", exp_other), ("prompt", exp_prompt)]:
        rel = np.abs(got[name][0] - exp) / np.abs(exp).max()
        assert rel.max() < 1e-5, (name, rel.max())
    # response_only: the response tokens outside the answer (position 4 and 7)
    got_r = extract_cett(model, resolve(model), [item], regions=("other",), other_scope="response_only", progress=False)
    exp_r = ref[:, [4, 7]].mean(1).reshape(-1)
    assert np.abs(got_r["other"][0] - exp_r).max() / np.abs(exp_r).max() < 1e-5


def test_batching_and_padding_do_not_change_features() -> None:
    model = tiny_llama(1)
    layout = resolve(model)
    rng = np.random.default_rng(0)
    items = []
    for k, n in enumerate([6, 11, 9, 14, 7]):
        ids = tuple(int(t) for t in rng.integers(3, 60, size=n))
        items.append(FeatureItem(f"q{k}", ids, answer=(n - 3, n - 1), response=(n - 4, n)))
    single = [extract_cett(model, layout, [it], progress=False) for it in items]
    batched = extract_cett(model, layout, items, batch_size=4, pad_token_id=0, progress=False)
    for k, s in enumerate(single):
        for region in ("answer", "other"):
            np.testing.assert_allclose(batched[region][k], s[region][0], rtol=1e-5, atol=1e-7)
    # the options object and keywords on top of it are the same call
    opts = ExtractOptions(batch_size=4, pad_token_id=0, progress=False)
    again = extract_cett(model, layout, items, opts)
    assert all(np.array_equal(again[r], batched[r]) for r in ("answer", "other"))
    only = extract_cett(model, layout, items, opts, regions=["answer"])
    assert list(only) == ["answer"]
    np.testing.assert_allclose(only["answer"], batched["answer"], rtol=1e-5, atol=1e-7)  # one region: another bmm shape
    with pytest.raises(ConfigError, match="options are regions, other_scope"):
        extract_cett(model, layout, items, opts, region="answer")


def test_empty_region_is_nan_and_rejected() -> None:
    model = tiny_llama()
    item = FeatureItem("whole", (4, 5, 6, 7), answer=(2, 4), response=(2, 4))
    feats = extract_cett(model, resolve(model), [item], regions=("answer", "other"), other_scope="response_only", progress=False)
    assert np.isnan(feats["other"]).all() and np.isfinite(feats["answer"]).all()
    with pytest.raises(DataError, match="whole"):
        check_finite(feats, ["whole"], 24, regions=("other",))
    with pytest.raises(DataError, match="outside"):
        extract_cett(model, resolve(model), [FeatureItem("bad", (1, 2), (1, 5), (0, 2))], progress=False)


def test_store_roundtrip_resume_and_fingerprint(tmp_path) -> None:
    model = tiny_llama()
    layout = resolve(model)
    items = [FeatureItem(f"q{i}", tuple(range(3, 10 + i)), answer=(4, 6), response=(3, 7 + i)) for i in range(5)]
    store = FeatureStore(tmp_path / "train").extract(model, layout, items, model_fingerprint="abc",
                                                     dtype="float32", chunk_size=2, options=QUIET)
    qids, feats = store.load()
    ref = extract_cett(model, layout, items, progress=False)
    assert qids == [it.qid for it in items]
    np.testing.assert_allclose(feats["answer"], ref["answer"], rtol=1e-6)
    # resume: an existing chunk is not recomputed (its mtime stays), a deleted one is
    first = tmp_path / "train" / "chunk_00000.safetensors"
    second = tmp_path / "train" / "chunk_00001.safetensors"
    mtime = first.stat().st_mtime_ns
    second.unlink()
    FeatureStore(tmp_path / "train").extract(model, layout, items, model_fingerprint="abc", dtype="float32",
                                             chunk_size=2, options=QUIET)
    assert first.stat().st_mtime_ns == mtime and second.is_file()
    with pytest.raises(FingerprintMismatch):
        FeatureStore(tmp_path / "train").load(expect_fingerprint="other")
