"""Answer-region features of a fixed item set (detection and origin sets), kept in a :class:`FeatureStore`.

Apart from :mod:`hneurons.core.store` because it adds a policy on top of the store (the whole store
is dropped when the items behind it change), which the training splits do not need.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hneurons.core import distributed
from hneurons.core.features import ExtractOptions, FeatureItem, pad_id
from hneurons.core.store import FeatureStore
from hneurons.errors import StageError
from hneurons.rundir import fingerprint_of, read_json, write_json


def answer_features(path: str | Path, loaded: Any, items: Sequence[FeatureItem], *, dtype: str = "float16",
                    batch_size: int = 16, stats_layer: int | None = None) -> np.ndarray:
    """Answer-region CETT of ``items`` kept in a store at ``path`` (detection and origin sets).

    Chunks are reused only while the items are the same ones (ids, tokens and spans); if the
    responses behind them changed, the old store is deleted first, since chunk reuse compares ids
    only. With ``stats_layer`` the store also keeps the answer-token statistics
    (``FeatureStore(path).load_stats()``).
    """
    store = FeatureStore(path)
    items_fp = fingerprint_of([[it.qid, list(it.input_ids), list(it.answer)] for it in items])
    marker = store.path / "items.json"
    if distributed.is_main():  # rank 0 clears the folder; every rank then extracts its chunks into it
        if store.path.is_dir() and (not marker.is_file() or read_json(marker).get("items") != items_fp):
            shutil.rmtree(store.path)
        store.path.mkdir(parents=True, exist_ok=True)
        write_json(marker, {"items": items_fp})
    distributed.barrier(f"preparing {store.path}")
    opts = ExtractOptions(("answer",), batch_size=batch_size, pad_token_id=pad_id(loaded.tokenizer), stats_layer=stats_layer)
    store.extract(loaded.model, loaded.layout, items, model_fingerprint=loaded.fingerprint, options=opts, dtype=dtype)
    qids, feats = store.load(regions=["answer"], expect_fingerprint=loaded.fingerprint)
    if qids != [it.qid for it in items]:
        raise StageError(f"{store.path} does not match its items; delete it and re-run the stage")
    return feats["answer"]
