"""Throughput of CETT feature extraction on the embedded model: ours vs a plain forward vs the official method.

Three ways over the same chat sequences (TriviaQA questions with the paper's suffix + a short
answer, rendered with the tokenizer's chat template), counted in real (non-pad) tokens per second:

1. ``plain``: the batched forward that :func:`hneurons.core.features.extract_cett` runs (same batches,
   same padding, same call: logits for the last position only), without any hook, so
   ``ratio_plain`` is the cost of the hooks alone; ``plain_full`` is the same forward computing
   logits at every position, as a plain ``model(...)`` call does (reported, not a target);
2. ``extract``: :func:`hneurons.core.features.extract_cett` (per-region mean CETT reduced inside the hooks);
3. ``official``: the official ``extract_activations.py`` method (github.com/thunlp/H-Neurons, scripts/extract_activations.py): one forward per
   sample, hooks keeping every layer's full [T, d_ff] input and output norm, ``torch.stack``, CETT
   computed afterwards, per-region means, one ``np.save`` per sample and region into a temp dir.

    python benchmarks/extraction.py --json            # default: 24 sequences, 3 repeats, median

Each method runs once on a few sequences to warm up, then ``--repeats`` rounds run every method
in turn (interleaved, so load from other processes hits all of them alike); the median is
reported. The last line with ``--json`` is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hneurons.core.arch import Layout  # noqa: E402
from hneurons.config import PAPER_SUFFIX  # noqa: E402
from hneurons.data import load_dataset  # noqa: E402
from hneurons.core.features import FeatureItem, extract_cett  # noqa: E402
from hneurons.core.generation import length_batches  # noqa: E402
from hneurons.core.hooks import CETT_EPS  # noqa: E402
from hneurons.core.models import load_model  # noqa: E402
from hneurons.text.locator import locate_answer_span  # noqa: E402
from hneurons.text.prompts import user_text  # noqa: E402
from hneurons.text.spans import Span, build_sequence  # noqa: E402

def _short_answer(aliases: Sequence[str]) -> str | None:
    """The first alias that reads like a short answer (letters, ≤ 4 words)."""
    for a in aliases:
        if any(c.isalpha() for c in a) and a.isascii() and len(a.split()) <= 4:
            return a
    return None


def build_items(tokenizer, n: int) -> list[FeatureItem]:
    """``n`` chat sequences: question + paper suffix, answered with a short gold alias."""
    items: list[FeatureItem] = []
    for k, rec in enumerate(load_dataset("triviaqa_dev")):
        answer = _short_answer(rec.answers)
        if answer is None:
            continue
        response = answer if k % 2 else f"The answer is {answer}."
        seq = build_sequence(tokenizer, user_text(rec.question, PAPER_SUFFIX), response)
        span = locate_answer_span(seq, rec.question)  # the stages' label-blind locator
        if not isinstance(span, Span):
            continue
        items.append(FeatureItem(rec.id, tuple(seq.input_ids), (span.start, span.end), (seq.prompt_end, seq.response_end)))
        if len(items) == n:
            break
    return items


def run_plain(model, layout: Layout, items: Sequence[FeatureItem], batch_size: int, pad: int,
              all_logits: bool = False) -> None:
    """The forward passes of extract_cett (same batching, padding and call), without hooks."""
    skip_logits = {} if all_logits else {"logits_to_keep": 1}
    device = next(model.parameters()).device
    with torch.inference_mode():
        for batch in length_batches([len(it.input_ids) for it in items], batch_size, 8192):
            seq_len = max(len(items[i].input_ids) for i in batch)
            ids = torch.full((len(batch), seq_len), pad, dtype=torch.long)
            attn = torch.zeros((len(batch), seq_len), dtype=torch.long)
            for row, i in enumerate(batch):
                n = len(items[i].input_ids)
                ids[row, :n] = torch.tensor(items[i].input_ids)
                attn[row, :n] = 1
            model(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False, **skip_logits)


def run_plain_full(model, layout: Layout, items: Sequence[FeatureItem], batch_size: int, pad: int) -> None:
    run_plain(model, layout, items, batch_size, pad, all_logits=True)


def run_extract(model, layout: Layout, items: Sequence[FeatureItem], batch_size: int, pad: int) -> None:
    extract_cett(model, layout, items, regions=("answer", "other"), batch_size=batch_size, pad_token_id=pad,
                 progress=False)


def run_official(model, layout: Layout, items: Sequence[FeatureItem], batch_size: int, pad: int) -> None:
    """The official scripts/extract_activations.py (github.com/thunlp/H-Neurons): per-sample forward, full tensors kept per layer, CETT after, np.save per sample."""
    device = next(model.parameters()).device
    wnorms = torch.stack([layout.down_weight(i).detach().norm(dim=0) for i in range(layout.n_layers)])  # [L, d_ff]
    acts: list[torch.Tensor] = []
    norms: list[torch.Tensor] = []

    def hook(mod, args, output) -> None:
        acts.append(args[0].detach())
        norms.append(torch.norm(output, dim=-1, keepdim=True))

    handles = [m.register_forward_hook(hook) for m in layout.down_projs]
    try:
        with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
            answer_dir, other_dir = Path(tmp, "answer_tokens"), Path(tmp, "all_except_answer_tokens")
            answer_dir.mkdir()
            other_dir.mkdir()
            for item in items:
                acts.clear()
                norms.clear()
                model(input_ids=torch.tensor([item.input_ids], device=device))
                z = torch.stack([a[0] for a in acts], dim=1)  # [T, L, d_ff]
                hn = torch.stack([n[0] for n in norms], dim=1)  # [T, L, 1]
                cett = (z.abs() * wnorms / (hn + CETT_EPS)).transpose(0, 1)  # [L, T, d_ff]
                a0, a1 = item.answer
                ans = cett[:, a0:a1].mean(1).float().cpu().numpy()
                other = torch.cat([cett[:, :a0], cett[:, a1:]], dim=1).mean(1).float().cpu().numpy()
                np.save(answer_dir / f"act_{item.qid}.npy", ans)
                np.save(other_dir / f"act_{item.qid}.npy", other)
    finally:
        for h in handles:
            h.remove()


METHODS: dict[str, Callable[..., None]] = {
    "plain": run_plain, "plain_full": run_plain_full, "extract": run_extract, "official": run_official,
}


def time_methods(names: Sequence[str], model, layout, items, batch_size, pad, repeats: int,
                 warmup_items: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process-CPU seconds per run of each method: a warm-up each, then interleaved rounds.

    CPU time is reported too because on a shared machine wall time swings with other processes'
    load, while the CPU time this process spends is what the method itself costs.
    """
    for name in names:
        METHODS[name](model, layout, items[:warmup_items], batch_size, pad)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            METHODS[name](model, layout, items, batch_size, pad)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return wall, cpu


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="number of chat sequences")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float32", help="float32 (CPUs without bf16), bfloat16, auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (0: torch's default); 1 by default because on a shared CPU "
                         "multi-threaded timings swing several-fold with other processes' load")
    ap.add_argument("--methods", default="plain,extract,official,plain_full",
                    help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    loaded = load_model(None, dtype=args.dtype, device=args.device)
    load_s = time.perf_counter() - t0
    tok = loaded.tokenizer
    items = build_items(tok, args.n)
    n_tokens = sum(len(it.input_ids) for it in items)
    pad = tok.pad_token_id
    padded = sum(max(len(items[i].input_ids) for i in b) * len(b) for b in length_batches([len(it.input_ids) for it in items], args.batch_size, 8192))
    print(f"model {loaded.name} ({loaded.dtype}, {loaded.device}) loaded in {load_s:.0f}s; "
          f"{len(items)} sequences, {n_tokens} tokens ({padded} with padding), batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")

    names = args.methods.split(",")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    wall, cpu = time_methods(names, loaded.model, loaded.layout, items, args.batch_size, pad, args.repeats,
                             warmup_items=min(4, len(items)))
    results: dict[str, float] = {}
    cpu_results: dict[str, float] = {}
    for name in names:
        med = statistics.median(wall[name])
        results[name] = n_tokens / med
        cpu_results[name] = n_tokens / statistics.median(cpu[name])
        print(f"{name:10s} median {med:6.2f}s  ({', '.join(f'{t:.2f}' for t in wall[name])})  "
              f"{results[name]:8.0f} tok/s   [cpu time: {cpu_results[name]:8.0f} tok/cpu-s]")

    def rate(name: str) -> float | None:
        return round(results[name], 1) if name in results else None

    def ratio(a: str, b: str, res: dict[str, float] = results) -> float | None:
        return round(res[a] / res[b], 3) if a in res and b in res else None

    out: dict[str, object] = {
        "plain_tok_s": rate("plain"),
        "extract_tok_s": rate("extract"),
        "official_tok_s": rate("official"),
        "plain_full_tok_s": rate("plain_full"),
        "ratio_plain": ratio("extract", "plain"),
        "ratio_official": ratio("extract", "official"),
        "cpu_time_ratio_plain": ratio("extract", "plain", cpu_results),
        "cpu_time_ratio_official": ratio("extract", "official", cpu_results),
        "device": f"{loaded.device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "model": loaded.name,
        "dtype": str(loaded.dtype).replace("torch.", ""),
        "n_sequences": len(items),
        "n_tokens": n_tokens,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
    }
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
