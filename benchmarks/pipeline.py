"""Per-stage throughput of the default job's model work vs plain ``transformers`` calls, on one slice.

The default preset (``hneurons run --preset default``) spends its time in four kinds of model
work; each is timed here against the same work done the obvious way, in the same process:

* ``screen``: greedy answers, ≤ 32 new tokens (``responses.screen``; ``detect`` decodes alike):
  :class:`~hneurons.core.generation.HFBackend` vs batched, left-padded ``model.generate``;
* ``sample``: K = 5 samples at T = 0.5, top-k 50, top-p 0.9, ≤ 32 new tokens: the backend vs
  ``generate(num_return_sequences=5)``;
* ``features``: :func:`~hneurons.core.features.extract_cett` vs the same batched forward without hooks;
* ``intervene``: greedy, ≤ 48 new tokens under :func:`~hneurons.core.hooks.scale_neurons` (α = 2 on
  random neurons): the backend vs ``generate``, both under the hook;
* ``jailbreak``: the intervention's long prompts (whole templates of 300-7,600 characters, as
  ``intervene.n_items`` draws them), greedy, ≤ 32 new tokens under the same hook:
  :func:`~hneurons.intervention.jailbreak.run_jailbreak` (one call per template, shared prefix prefilled once,
  batches cut by padded tokens) vs ``generate`` over the same prompts in batches of ``--batch-size``.

Generation is counted in generated tokens (a row's eos counts, padding does not), features in
real sequence tokens. Every stage runs ours and the baseline in turn, ``--repeats`` times
(interleaved, so other processes' load hits both alike); medians and the ratio ours/baseline are
reported (> 1: ours is faster).

    python benchmarks/pipeline.py --json          # ~3-5 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extraction import build_items, run_plain  # noqa: E402
from sampling import load_questions  # noqa: E402

from hneurons.intervention.jailbreak import load_jailbreak, run_jailbreak  # noqa: E402
from hneurons.intervention.tasks import Judge  # noqa: E402
from hneurons.config import InterveneConfig  # noqa: E402
from hneurons.core.features import extract_cett  # noqa: E402
from hneurons.core.generation import Generation, HFBackend, SamplingParams  # noqa: E402
from hneurons.core.hooks import scale_neurons  # noqa: E402
from hneurons.core.models import load_model  # noqa: E402
from hneurons.intervention.sweep import make_generate_fn
from hneurons.text.prompts import render_conversation, render_prompt  # noqa: E402


def count(gens: list[list[Generation]]) -> int:
    """Generated tokens, the eos of a finished row included (generate pays for it too)."""
    return sum(len(g.token_ids) + (g.finish_reason == "stop") for row in gens for g in row)


def hf_generate(model, tok, prompts: list[str], params: SamplingParams, batch_size: int) -> int:
    """Plain batched ``model.generate`` (left padding); returns generated tokens up to each eos."""
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    tok.padding_side = "left"
    per_batch = max(1, batch_size // params.n)
    total = 0
    torch.manual_seed(params.seed)
    with torch.inference_mode():
        for b in range(0, len(prompts), per_batch):
            enc = tok(prompts[b:b + per_batch], return_tensors="pt", padding=True, add_special_tokens=False)
            kw = dict(do_sample=True, temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                      num_return_sequences=params.n) if not params.greedy else dict(do_sample=False)
            out = model.generate(**enc, max_new_tokens=params.max_new_tokens, eos_token_id=eos,
                                 pad_token_id=pad, **kw)
            new = out[:, enc["input_ids"].shape[1]:]
            for row in new.tolist():
                total += row.index(eos) + 1 if eos in row else len(row)
    return total


def main() -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=64, help="greedy screening prompts")
    ap.add_argument("--sample-questions", type=int, default=12, help="prompts sampled K=5 times")
    ap.add_argument("--feature-items", type=int, default=32)
    ap.add_argument("--intervene-prompts", type=int, default=16)
    ap.add_argument("--jailbreak-items", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args()

    t0 = time.perf_counter()
    loaded = load_model(None)
    model, tok, layout = loaded.model, loaded.tokenizer, loaded.layout
    print(f"loaded {loaded.name} ({model.dtype}) in {time.perf_counter() - t0:.1f} s", flush=True)
    prompts = [render_prompt(tok, q) for q in load_questions(args.questions)]
    backend = HFBackend(model, tok, batch_size=args.batch_size)
    greedy32 = SamplingParams(temperature=0.0, max_new_tokens=32)
    sample = SamplingParams(temperature=0.5, top_k=50, top_p=0.9, max_new_tokens=32, n=5)
    greedy48 = SamplingParams(temperature=0.0, max_new_tokens=48)
    items = build_items(tok, args.feature_items)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    feature_tokens = sum(len(it.input_ids) for it in items)
    neurons = np.random.default_rng(0).choice(layout.n_neurons, 64, replace=False)
    few = prompts[:args.intervene_prompts]

    def ours_gen(ps: list[str], params: SamplingParams) -> Callable[[], int]:
        return lambda: count(backend.generate(ps, params, progress=False))

    def base_gen(ps: list[str], params: SamplingParams) -> Callable[[], int]:
        return lambda: hf_generate(model, tok, ps, params, args.batch_size)

    def under_hook(fn: Callable[[], int]) -> Callable[[], int]:
        def run() -> int:
            with scale_neurons(layout, neurons, 2.0):
                return fn()
        return run

    jb_items = load_jailbreak(InterveneConfig(n_items=args.jailbreak_items), 0)
    jb_prompts = [render_conversation(tok, [{"role": "user", "content": it.user}]) for it in jb_items]
    generate = make_generate_fn(model, tok, chat=True, batch_size=args.batch_size)

    def ours_jailbreak() -> int:
        made: list[Generation] = []

        def counting(convs, params):  # noqa: ANN001, ANN202 - a GenerateFn
            out = generate(convs, params)
            made.extend(out)
            return out

        run_jailbreak(jb_items, counting, Judge(), greedy32)
        return count([[g] for g in made])

    def features(hooked: bool) -> Callable[[], int]:
        def run() -> int:
            if hooked:
                extract_cett(model, layout, items, batch_size=16, pad_token_id=pad, progress=False)
            else:
                run_plain(model, layout, items, 16, pad)
            return feature_tokens
        return run

    stages: dict[str, tuple[Callable[[], int], Callable[[], int]]] = {
        "screen": (ours_gen(prompts, greedy32), base_gen(prompts, greedy32)),
        "sample": (ours_gen(prompts[:args.sample_questions], sample),
                   base_gen(prompts[:args.sample_questions], sample)),
        "features": (features(True), features(False)),
        "intervene": (under_hook(ours_gen(few, greedy48)), under_hook(base_gen(few, greedy48))),
        "jailbreak": (under_hook(ours_jailbreak), under_hook(base_gen(jb_prompts, greedy32))),
    }
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for stage, (ours, base) in stages.items():
            for who, fn in (("ours", ours), ("baseline", base)):
                t0 = time.perf_counter()
                n = fn()
                secs = time.perf_counter() - t0
                rates.setdefault((stage, who), []).append(n / secs)
                print(f"{stage:<10}{who:<10}{n:>7} tokens {secs:7.1f} s {n / secs:8.1f} tok/s", flush=True)
    result: dict[str, object] = {
        "device": f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads",
        "model": f"{loaded.name} {model.dtype}",
    }
    print(f"\n{'stage':<10}{'ours tok/s':>12}{'baseline':>10}{'ratio':>8}")
    for stage in stages:
        ours, base = (statistics.median(rates[(stage, w)]) for w in ("ours", "baseline"))
        ratios = [a / b for a, b in zip(rates[(stage, "ours")], rates[(stage, "baseline")])]
        result[stage] = {"tok_s": round(ours, 1), "baseline_tok_s": round(base, 1),
                         "ratio": round(statistics.median(ratios), 2)}
        print(f"{stage:<10}{ours:>12.1f}{base:>10.1f}{statistics.median(ratios):>8.2f}")
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
