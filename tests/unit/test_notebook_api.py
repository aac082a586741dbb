"""The notebook API: ``dir(hneurons)`` lists it, and ``hneurons.cett`` featurises pairs as the pipeline does."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import bpe_tokenizer, tiny_llama  # noqa: E402

import hneurons  # noqa: E402
from hneurons.config import PAPER_SUFFIX  # noqa: E402
from hneurons.core.arch import resolve  # noqa: E402
from hneurons.core.features import FeatureItem, extract_cett  # noqa: E402
from hneurons.errors import DataError  # noqa: E402
from hneurons.text.locator import locate_answer_span  # noqa: E402
from hneurons.text.spans import Span, build_sequence  # noqa: E402

PAIRS = [
    ("Who wrote Hamlet?", "William Shakespeare wrote it."),
    ("What is the capital of France?", " Paris. "),
    ("What is the largest planet?", "the largest planet is Jupiter, not Neptune"),
    ("Who wrote The Iceman Cometh?", "Eugene O'Neill in 1939"),
]


def _loaded(chat: bool = True) -> SimpleNamespace:
    tok = bpe_tokenizer(chat=chat)
    model = tiny_llama(tok, seed=7)
    return SimpleNamespace(model=model, tokenizer=tok, layout=resolve(model))


def _pipeline_features(m: SimpleNamespace, pairs: list[tuple[str, str]], chat: bool) -> np.ndarray:
    """The training path written out: the paper's user turn, build_sequence, the phrase locator, extract_cett."""
    items = []
    for i, (q, a) in enumerate(pairs):
        seq = build_sequence(m.tokenizer, f"{q.strip()} {PAPER_SUFFIX}", a, chat=chat)
        span = locate_answer_span(seq, q, "phrase")
        assert isinstance(span, Span)
        items.append(FeatureItem(str(i), tuple(seq.input_ids), (span.start, span.end), (seq.prompt_end, seq.response_end)))
    return extract_cett(m.model, m.layout, items, regions=("answer",), batch_size=1, progress=False)["answer"]


def test_dir_lists_the_public_api() -> None:
    names = dir(hneurons)
    assert {"cett", "load_model", "score", "guarded_generate", "HNeuronProbe", "scale_neurons"} <= set(names)
    assert not {"Any", "annotations", "importlib"} & set(names)
    for name in hneurons.__all__:  # every listed name resolves
        assert getattr(hneurons, name) is not None


@pytest.mark.parametrize("chat", [True, False])
def test_cett_equals_the_pipeline_features(chat: bool) -> None:
    m = _loaded(chat=chat)
    got = hneurons.cett(m, PAIRS, batch_size=3)  # chat=None: the template when there is one
    assert got.shape == (len(PAIRS), m.layout.n_neurons) and got.dtype == np.float32
    np.testing.assert_allclose(got, _pipeline_features(m, PAIRS, chat), rtol=1e-5, atol=1e-7)
    assert np.isfinite(got).all() and (got > 0).any()
    # a different answer gives a different row: the features read the answer
    assert not np.allclose(got[0], got[1])


def test_an_answer_without_a_span_is_named() -> None:
    m = _loaded()
    bad = [*PAIRS[:2], ("Who wrote Hamlet?", "?!")]
    with pytest.raises(DataError, match=r"pair 2 \('Who wrote Hamlet\?', '\?!'\): response has only whitespace"):
        hneurons.cett(m, bad)
    with pytest.warns(UserWarning, match="pair 2"):
        got = hneurons.cett(m, bad, on_unlocated="nan")
    assert np.isnan(got[2]).all() and np.isfinite(got[:2]).all()
    np.testing.assert_allclose(got[:2], hneurons.cett(m, PAIRS[:2]), rtol=1e-5, atol=1e-7)
    with pytest.raises(DataError, match="pair 0: expected \\(question, answer\\) strings"):
        hneurons.cett(m, ["Who wrote Hamlet?"])  # type: ignore[list-item]


def test_cett_leaves_the_model_unchanged() -> None:
    m = _loaded()
    ids = torch.tensor([[1, 5, 9, 12]])
    before = m.model(ids).logits
    hneurons.cett(m, PAIRS[:1])
    assert torch.equal(m.model(ids).logits, before)  # hooks removed
