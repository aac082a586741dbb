"""CETT features: one forward pass per response, reduced to per-region means inside the hook.

For each labelled response the full sequence (prompt + response, as rendered for sampling) goes
through the model once; :func:`hneurons.core.hooks.capture_cett` turns every layer's down-projection
input into the mean CETT over each region (``answer``, ``other``, optionally ``prompt``), so the host
only ever holds [batch, layers, regions, d_ff].

Batches are length-bucketed and right-padded: with causal attention a real token never attends to
a pad on its right, and pads carry zero weight in every region, so batching cannot change a feature.

:class:`FeatureStore` keeps the result on disk as float16 (or float32) safetensors chunks, written
as they finish, so a re-run resumes at the first missing chunk. The index records each chunk's
sha256 as soon as the chunk is written; a chunk is reused and read only while it still hashes as
recorded, so a damaged chunk is re-extracted (or named) instead of silently changing the probe.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hneurons.config import PAPER_SUFFIX
from hneurons.core.arch import Layout
from hneurons.core.generation import length_batches
from hneurons.core.hooks import capture_cett, column_norms
from hneurons.errors import ConfigError, DataError
from hneurons.text.locator import locate_answer_span
from hneurons.text.prompts import user_text
from hneurons.text.spans import SpanFailure, build_sequence

REGIONS = ("answer", "other", "prompt")
# answer-token statistics the same forward can give (``stats_layer``): mean log-probability and
# predictive entropy of the answer tokens, and the residual stream averaged over them
STATS = ("logprob", "entropy", "residual")


@dataclass(frozen=True)
class FeatureItem:
    """One response to featurise: token ids of the full sequence and where its parts are.

    ``answer`` and ``response`` are token ranges [start, end) inside ``input_ids``; the prompt is
    everything before ``response[0]``.
    """

    qid: str
    input_ids: tuple[int, ...]
    answer: tuple[int, int]
    response: tuple[int, int]


def region_masks(item: FeatureItem, seq_len: int, regions: Sequence[str], other_scope: str) -> torch.Tensor:
    """0/1 masks [regions, seq_len] for one item (positions ≥ len(item) are padding and stay 0).

    ``other`` is the official complement of the answer over the whole sequence
    (``full_sequence``) or only the response tokens outside the answer (``response_only``).
    """
    n = len(item.input_ids)
    a0, a1 = item.answer
    r0, r1 = item.response
    if not (0 <= a0 < a1 <= n and 0 <= r0 <= r1 <= n):
        raise DataError(f"{item.qid}: answer span {item.answer} / response {item.response} outside the {n}-token sequence")
    masks = torch.zeros(len(regions), seq_len)
    for i, region in enumerate(regions):
        if region == "answer":
            masks[i, a0:a1] = 1
        elif region == "other":
            if other_scope == "full_sequence":
                masks[i, :n] = 1
            else:
                masks[i, r0:r1] = 1
            masks[i, a0:a1] = 0
        elif region == "prompt":
            masks[i, :r0] = 1
        else:
            raise DataError(f"unknown feature region {region!r}; regions are {', '.join(REGIONS)}")
    return masks


def _logit_positions(items: Sequence[FeatureItem], batch: Sequence[int]) -> torch.Tensor:
    """Positions whose logits predict some answer token of the batch (a0 − 1 … a1 − 2 of each row)."""
    keep: set[int] = set()
    for i in batch:
        a0, a1 = items[i].answer
        if not 1 <= a0 < a1 <= len(items[i].input_ids):
            raise DataError(f"{items[i].qid}: answer span {items[i].answer} must lie after the first token")
        keep.update(range(a0 - 1, a1 - 1))
    return torch.tensor(sorted(keep), dtype=torch.long)


def _answer_stats(logits: torch.Tensor, kept: torch.Tensor | None, hidden: torch.Tensor, ids: torch.Tensor,
                  items: Sequence[FeatureItem], batch: Sequence[int], out: dict[str, np.ndarray]) -> None:
    """Fill ``out``'s :data:`STATS` rows of one batch.

    Token t of the answer is predicted by the logits at t − 1, so for the span [a0, a1) the scores
    average over positions a0 − 1 … a1 − 2: logprob = mean log p(x_t | x_<t), entropy = mean
    H(p(· | x_<t)) in nats. ``kept`` lists the positions ``logits`` holds (None: all of them).
    """
    where = None if kept is None else {int(p): k for k, p in enumerate(kept.tolist())}
    for row, i in enumerate(batch):
        a0, a1 = items[i].answer
        cols = list(range(a0 - 1, a1 - 1)) if where is None else [where[p] for p in range(a0 - 1, a1 - 1)]
        logp = torch.log_softmax(logits[row, cols].float(), dim=-1)
        target = ids[row, a0:a1].to(logp.device)
        out["logprob"][i] = float(logp.gather(-1, target[:, None]).mean())
        out["entropy"][i] = float(-(logp.exp() * logp).sum(-1).mean())
        out["residual"][i] = hidden[row, a0:a1].float().mean(0).cpu().numpy()


@dataclass(frozen=True)
class ExtractOptions:
    """How :func:`extract_cett` batches the items and what it returns for each.

    ``regions`` (see :data:`REGIONS`) and ``other_scope`` decide the features; ``stats_layer``
    adds the answer-token :data:`STATS` of the same forward (``hidden_states[stats_layer]``: 0 =
    embeddings, i = output of block i); the rest only changes speed and memory (``batch_size``
    items and ``max_tokens`` padded tokens per forward) or the progress bar.
    """

    regions: tuple[str, ...] = ("answer", "other")
    other_scope: str = "full_sequence"
    batch_size: int = 16
    max_tokens: int = 8192
    pad_token_id: int = 0
    progress: bool = True
    stats_layer: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "regions", tuple(self.regions))  # a list from a config is fine too
        if self.batch_size < 1 or self.max_tokens < 1:
            raise ConfigError(f"batch_size and max_tokens must be ≥ 1, got {self.batch_size} and {self.max_tokens}")


def _batch_inputs(items: Sequence[FeatureItem], batch: Sequence[int], opts: ExtractOptions) -> tuple[torch.Tensor, ...]:
    """Right-padded ids, attention mask and region masks [batch, regions, seq] of one batch."""
    seq_len = max(len(items[i].input_ids) for i in batch)
    ids = torch.full((len(batch), seq_len), opts.pad_token_id, dtype=torch.long)
    attn = torch.zeros((len(batch), seq_len), dtype=torch.long)
    masks = torch.zeros((len(batch), len(opts.regions), seq_len))
    for row, i in enumerate(batch):
        n = len(items[i].input_ids)
        ids[row, :n] = torch.tensor(items[i].input_ids)
        attn[row, :n] = 1
        masks[row] = region_masks(items[i], seq_len, opts.regions, opts.other_scope)
    return ids, attn, masks


@torch.inference_mode()
def extract_cett(model: torch.nn.Module, layout: Layout, items: Sequence[FeatureItem],
                 options: ExtractOptions | None = None, **overrides: Any) -> dict[str, np.ndarray]:
    """Mean CETT per region for every item: ``{region: float32 [n_items, n_neurons]}``.

    ``options`` (:class:`ExtractOptions`), with any of its fields given as keywords on top
    (``extract_cett(model, layout, items, regions=("answer",))``). Row order follows ``items``; the
    flat neuron index is ``layer * d_ff + neuron``. A region with no tokens in an item gives a NaN
    row. With ``stats_layer`` the same forward also gives ``logprob``/``entropy`` [n] and
    ``residual`` [n, d_model], so the detection baselines that need them cost no second pass.
    """
    try:
        opts = dataclasses.replace(options or ExtractOptions(), **overrides)
    except TypeError as exc:
        raise ConfigError(f"extract_cett: {exc}; options are {', '.join(f.name for f in dataclasses.fields(ExtractOptions))}") from None
    regions, stats_layer = opts.regions, opts.stats_layer
    out = {r: np.empty((len(items), layout.n_neurons), dtype=np.float32) for r in regions}
    if stats_layer is not None:
        out.update(logprob=np.empty(len(items), dtype=np.float32), entropy=np.empty(len(items), dtype=np.float32),
                   residual=np.empty((len(items), layout.d_model), dtype=np.float32))
    device = next(model.parameters(), None)
    device = layout.device(0) if device is None else device.device  # the embedding's device under device_map
    # The LM head over every position is ~15-20% of a small model's forward (vocab × d_model per
    # token): features ask for the last position only, statistics for the answer positions only.
    keep_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    wnorms = [column_norms(layout, layer) for layer in range(layout.n_layers)]  # once, not per batch
    bar = tqdm(total=len(items), desc="CETT features", unit="resp", disable=None if opts.progress else True)
    for batch in length_batches([len(it.input_ids) for it in items], opts.batch_size, opts.max_tokens):
        ids, attn, masks = _batch_inputs(items, batch, opts)
        # the span check runs for every model; positions are passed only where the forward takes them
        kept = _logit_positions(items, batch) if stats_layer is not None else None
        kwargs: dict[str, Any] = {} if stats_layer is None else {"output_hidden_states": True}
        if keep_logits:
            kwargs["logits_to_keep"] = 1 if kept is None else kept.to(device)
        else:
            kept = None  # full logits: _answer_stats indexes positions directly
        with capture_cett(layout, masks, wnorms=wnorms) as feats:
            res = model(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False, **kwargs)
        if stats_layer is not None:
            _answer_stats(res.logits, kept, res.hidden_states[stats_layer], ids, items, batch, out)
        flat = feats.reshape(len(batch), layout.n_layers, len(regions), layout.d_ff).permute(2, 0, 1, 3)
        flat = flat.reshape(len(regions), len(batch), layout.n_neurons).numpy()
        for r, region in enumerate(regions):
            out[region][batch] = flat[r]
        bar.update(len(batch))
    bar.close()
    return out


def cett(model: Any, pairs: Sequence[tuple[str, str]], *, chat: bool | None = None, suffix: str = PAPER_SUFFIX,
         batch_size: int = 16, on_unlocated: str = "raise") -> np.ndarray:
    """Answer-region CETT of (question, answer) pairs, exactly as the pipeline featurises its answers.

    ``model`` is a :class:`~hneurons.core.models.LoadedModel` (or what :func:`~hneurons.core.models.load_model`
    takes: a path, a name, None for the embedded model). Each pair is rendered as the pipeline
    renders a sampled answer: user turn :func:`~hneurons.text.prompts.user_text` (question + ``suffix``),
    the model's chat template (``chat=None``: when it has one, else the plain base-model format,
    the switch the pipeline makes), the answer as the assistant turn. The answer span is the
    label-blind locator's (:func:`~hneurons.text.locator.locate_answer_span`, method ``phrase``, the
    rule the probe is trained with), and each row is the mean CETT over it: float32
    ``[len(pairs), n_neurons]``, columns ``layer * d_ff + neuron``, the probe's feature order::

        m = hneurons.load_model()
        X = hneurons.cett(m, [("Who wrote Hamlet?", "It was William Shakespeare.")])
        p = probe.predict_proba(X)[:, 1]

    A pair whose span cannot be located (an empty answer, or only punctuation) raises a
    :class:`~hneurons.errors.DataError` naming the pair and the reason; ``on_unlocated="nan"``
    gives such pairs a NaN row instead and warns which they are.
    """
    if on_unlocated not in ("raise", "nan"):
        raise ConfigError(f"on_unlocated must be raise or nan, got {on_unlocated!r}")
    if not all(hasattr(model, a) for a in ("model", "tokenizer", "layout")):
        from hneurons.core.models import load_model

        model = load_model(model)
    tok = model.tokenizer
    chat = bool(getattr(tok, "chat_template", None)) if chat is None else chat
    items, rows, missing = [], [], []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise DataError(f"pair {i}: expected (question, answer) strings, got {pair!r:.80}")
        question, answer = pair
        seq = build_sequence(tok, user_text(question, suffix), answer, chat=chat)
        span = locate_answer_span(seq, question, "phrase")
        if isinstance(span, SpanFailure):
            missing.append(f"pair {i} ({question[:40]!r}, {answer[:40]!r}): {span.reason}")
            continue
        items.append(FeatureItem(str(i), tuple(seq.input_ids), (span.start, span.end), (seq.prompt_end, seq.response_end)))
        rows.append(i)
    if missing and on_unlocated == "raise":
        raise DataError(f"no answer span in {len(missing)} pair(s), first {missing[0]}; give answers with words, "
                        'or pass on_unlocated="nan" to get NaN rows for them')
    if missing:
        warnings.warn(f"no answer span in {len(missing)} pair(s) (NaN rows): " + "; ".join(missing), stacklevel=2)
    out = np.full((len(pairs), model.layout.n_neurons), np.nan, dtype=np.float32)
    if items:
        opts = ExtractOptions(("answer",), batch_size=batch_size, pad_token_id=tok.pad_token_id or 0, progress=False)
        out[rows] = extract_cett(model.model, model.layout, items, opts)["answer"]
    return out


def residual_layer(n_layers: int) -> int:
    """Where the stored statistics read the residual stream: ``hidden_states[n_layers // 2]``,
    the output of the middle block (the residual-probe baseline's layer)."""
    return n_layers // 2


def pad_id(tokenizer: Any) -> int:
    """The id to pad feature batches with (pads carry zero weight, so any valid id works)."""
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0))
