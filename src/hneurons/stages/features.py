"""Stage 2 — features: CETT of every labelled response (train and held-out splits).

The same forward also stores the answer tokens' log-probability, entropy and mid-layer residual
mean (:data:`hneurons.core.features.STATS`), which the detection baselines fit on, so the detect stage
needs no second pass over the training answers.

The sequence is rebuilt exactly as in the responses stage (same chat rendering, same tokenizer
offsets), so the answer span indices stored there point at the same tokens here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from hneurons.core.features import ExtractOptions, FeatureItem, residual_layer
from hneurons.core.store import FeatureStore
from hneurons.pipeline import Context
from hneurons.rundir import file_fingerprint
from hneurons.text.spans import build_sequence


def inputs(ctx: Context) -> dict[str, Any]:
    return {"features": ctx.cfg.section("features"), "model": ctx.model_fingerprint,
            "prompt_format": ctx.cfg.model.prompt_format, "stats": "answer-token stats at hidden_states[n_layers // 2]",
            "labelled": file_fingerprint(ctx.rundir.path("responses", "labelled.parquet"))}


def items_from_rows(tokenizer: Any, rows: list[dict], chat: bool) -> list[FeatureItem]:
    """FeatureItems for labelled rows (``prompt``, ``response``, ``span_start``, ``span_end``)."""
    items = []
    for row in rows:
        seq = build_sequence(tokenizer, row["prompt"], row["response"], chat=chat)
        items.append(FeatureItem(row["qid"], tuple(seq.input_ids), (int(row["span_start"]), int(row["span_end"])),
                                 (seq.prompt_end, seq.response_end)))
    return items


def regions(ctx: Context) -> tuple[str, ...]:
    """The regions configured for extraction (answer and other; prompt optionally)."""
    return ("answer", "other", "prompt") if ctx.cfg.features.prompt_region else ("answer", "other")


def run(ctx: Context) -> dict[str, Any]:
    f = ctx.cfg.features
    table = pq.read_table(ctx.rundir.path("responses", "labelled.parquet")).to_pylist()
    loaded = ctx.model
    chat = ctx.cfg.model.prompt_format == "chat"
    counts = {}
    for split in ("train", "heldout"):
        rows = [r for r in table if r["split"] == split]
        if not rows:
            continue
        items = items_from_rows(loaded.tokenizer, rows, chat)
        opts = ExtractOptions(regions(ctx), f.other_scope, f.batch_size, pad_token_id=loaded.tokenizer.pad_token_id or 0,
                              stats_layer=residual_layer(loaded.layout.n_layers))
        FeatureStore(ctx.rundir.path("features", split)).extract(
            loaded.model, loaded.layout, items, model_fingerprint=loaded.fingerprint, options=opts, dtype=f.store_dtype)
        counts[split] = len(items)
    return {"responses": counts, "n_neurons": loaded.layout.n_neurons}


def outputs(ctx: Context) -> list[Path]:
    """Every file of the train and held-out stores (``features/detect_*`` and ``origin_*`` belong to those stages)."""
    root = ctx.rundir.root / "features"
    return sorted(p for split in ("train", "heldout") if (root / split).is_dir()
                  for p in (root / split).iterdir() if p.is_file() and not p.name.startswith("."))
