"""Glue several stages share: the configured sampling backend and the resumable one-answer log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from hneurons.core import distributed
from hneurons.core.backends import make_backend
from hneurons.errors import ConfigError
from hneurons.pipeline import Context
from hneurons.rundir import append_jsonl, read_jsonl, unfinished_chunks

GEN_CHUNK = 64  # prompts per resume-log append


def sampling_backend(ctx: Context) -> Any:
    """The configured sampling backend (``responses.backend``): hf, vllm or an OpenAI-compatible server."""
    r = ctx.cfg.responses
    if r.backend == "openai":
        if not (r.backend_url and r.backend_model):
            raise ConfigError("responses.backend = openai needs responses.backend_url and responses.backend_model")
        return make_backend("openai", base_url=r.backend_url, model=r.backend_model)
    if r.backend == "vllm":
        return make_backend("vllm", model=ctx.model.source)
    return make_backend("hf", model=ctx.model.model, tokenizer=ctx.model.tokenizer, batch_size=r.batch_size)


def answers_logged(ctx: Any, log_path: Path, params_key: str, recs: list[Any], prompt_of: Callable[[Any], str],
                   make_backend: Callable[[], Any], params: Any, what: str) -> dict[str, dict[str, Any]]:
    """One answer per question, appended to ``log_path`` chunk by chunk; resumable (detect and origin).

    Only lines written with ``params_key`` count (a changed setting answers again). Chunks sit at
    fixed positions and chunk ``start`` samples with seed ``params.seed + start``, so a chunk cut
    short is redone with its own seeds and only its missing answers are appended.
    """
    from dataclasses import replace

    distributed.fold_shard_logs(log_path)
    done = {d["qid"]: d for d in read_jsonl(log_path, key=lambda d: (d.get("params"), d["qid"]))
            if d.get("params") == params_key}
    todo = unfinished_chunks(recs, GEN_CHUNK, lambda rec: rec.id in done)
    if not todo:
        return done
    backend = make_backend()
    ctx.log(f"{what} {len(recs) - len(done)} questions ({len(done)} already in {log_path.name})")
    mine = []  # this rank's chunks (every chunk in one process), merged in order below
    for start, part in tqdm(distributed.shard(todo), desc=log_path.stem, unit="chunk", disable=None):
        gens = backend.generate([prompt_of(rec) for rec in part], replace(params, seed=params.seed + start),
                                progress=False)
        lines = [{"qid": rec.id, "text": g[0].text, "finish_reason": g[0].finish_reason,
                  "n_tokens": len(g[0].token_ids), "params": params_key}
                 for rec, g in zip(part, gens) if rec.id not in done]
        append_jsonl(distributed.shard_log(log_path), lines)
        mine.append(lines)
    for lines in distributed.merge_shard_logs(log_path, mine):
        done.update({ln["qid"]: ln for ln in lines})
    return done
