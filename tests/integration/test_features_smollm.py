"""CETT extraction on the embedded SmolLM2 with real chat sequences (sanity checks on the paper's CETT, arXiv 2512.01797, §6.1.2)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from hneurons.config import PAPER_SUFFIX  # noqa: E402
from hneurons.core.features import FeatureItem, extract_cett, region_masks  # noqa: E402
from hneurons.core.hooks import CETT_EPS, capture_cett  # noqa: E402
from hneurons.text.spans import Span, build_sequence, locate_answer  # noqa: E402

pytestmark = pytest.mark.integration

# TriviaQA-style questions with short responses (some right, some wrong: both kinds are featurised).
QA = [
    ("Who wrote The Iceman Cometh?", "Eugene O'Neill", "Eugene O'Neill"),
    ("What is the capital of France?", "Paris", "Paris"),
    ("Which planet is the largest in the solar system?", "Jupiter is the largest planet.", "Jupiter"),
    ("In which country is Mount Kilimanjaro?", "Kenya", "Kenya"),
    ("What is the chemical symbol for gold?", "The symbol is Au.", "Au"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", "Leonardo da Vinci"),
]



@pytest.fixture(scope="module")
def items(loaded) -> list[FeatureItem]:
    out = []
    for k, (question, response, answer) in enumerate(QA):
        seq = build_sequence(loaded.tokenizer, f"{question} {PAPER_SUFFIX}", response)
        span = locate_answer(seq, answer)
        assert isinstance(span, Span), span
        out.append(FeatureItem(f"q{k}", tuple(seq.input_ids), (span.start, span.end), (seq.prompt_end, seq.response_end)))
    assert len({len(it.input_ids) for it in out}) > 1  # different lengths, so batching pads
    return out


def test_batched_equals_one_at_a_time(loaded, items) -> None:
    pad = loaded.tokenizer.pad_token_id
    kw = dict(regions=("answer", "other", "prompt"), pad_token_id=pad, progress=False)
    batched = extract_cett(loaded.model, loaded.layout, items, batch_size=6, **kw)
    for k, item in enumerate(items):
        single = extract_cett(loaded.model, loaded.layout, [item], batch_size=1, **kw)
        for region in kw["regions"]:
            assert np.isfinite(single[region]).all()
            np.testing.assert_allclose(batched[region][k], single[region][0], rtol=1e-4, atol=1e-6,
                                       err_msg=f"{item.qid} {region}")


def test_per_token_cett_sanity_and_hook_reconstruction(loaded, items) -> None:
    """Per-token CETT (one region per token) against z and h captured independently at one layer."""
    layout, model = loaded.layout, loaded.model
    item = items[0]
    ids = torch.tensor([item.input_ids])
    t = ids.shape[1]
    probe_layer = 17
    seen: dict[str, torch.Tensor] = {}
    handle = layout.down_projs[probe_layer].register_forward_hook(
        lambda mod, args, out: seen.update(z=args[0].detach().clone(), h=out.detach().clone()))
    try:
        with torch.inference_mode(), capture_cett(layout, torch.eye(t)[None]) as feats:
            model(input_ids=ids, use_cache=False)
    finally:
        handle.remove()
    cett = feats[0]  # [layers, T, d_ff]
    assert cett.shape == (30, t, 1536)
    assert torch.isfinite(cett).all() and (cett >= 0).all()
    assert cett.max() < 1.5  # a single neuron's share; it can pass 1 only through cancellation among the others
    per_token_sum = cett.sum(-1)  # triangle inequality: ‖Σ_j h_j‖ ≤ Σ_j ‖h_j‖
    assert (per_token_sum >= 1 - 1e-4).all(), per_token_sum.min()
    assert per_token_sum.median() > 2  # typically much larger than 1

    z, h = seen["z"][0], seen["h"][0]
    with torch.inference_mode():
        torch.testing.assert_close(layout.down_projs[probe_layer](z), h, rtol=0, atol=0)  # the hook sees the output
    wd = layout.down_weight(probe_layer).double()
    j = 123
    assert torch.allclose((wd[:, j] * z[:, j, None].double()).norm(dim=-1), z[:, j].double().abs() * wd[:, j].norm())
    ref = z.double().abs() * wd.norm(dim=0) / (h.double().norm(dim=-1, keepdim=True) + CETT_EPS)
    torch.testing.assert_close(cett[probe_layer].double(), ref, rtol=1e-4, atol=1e-7)

    # The region means extract_cett reports are the means of these per-token values.
    feats_item = extract_cett(model, layout, [item], regions=("answer", "other"), progress=False)
    masks = region_masks(item, t, ("answer", "other"), "full_sequence")
    for r, region in enumerate(("answer", "other")):
        mean = (cett * masks[r][None, :, None]).sum(1) / masks[r].sum()
        np.testing.assert_allclose(feats_item[region][0], mean.reshape(-1).numpy(), rtol=1e-4, atol=1e-7)
