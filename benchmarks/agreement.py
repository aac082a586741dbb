"""Do the CPU speed levers change answers? Greedy TriviaQA answers and verdicts on fixed questions.

The default job samples in bf16 where the CPU has native bf16, prefills the prompt prefix a batch
shares once (``HFBackend.share_prefix``) and cuts batches by padded prompt tokens. None of these
changes the mathematics, but bf16 rounds differently with the shapes of the matrices, so a
near-tied token can flip and the rest of the answer follows it. This script answers the first
``--questions`` questions of the training pool greedily (≤ 32 new tokens, the screen's setting)
with each configuration and reports, against the float32 whole-prompt reference and against each
other: identical text, identical verdict (alias judge), accuracy, and seconds.

    python benchmarks/agreement.py --questions 512 --json     # ~4 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from hneurons.config import PAPER_SUFFIX  # noqa: E402
from hneurons.data import load_dataset  # noqa: E402
from hneurons.core.generation import HFBackend, SamplingParams  # noqa: E402
from hneurons.judges.rules import match_alias  # noqa: E402
from hneurons.core.models import load_model  # noqa: E402
from hneurons.text.prompts import render_prompt, user_text  # noqa: E402

CONFIGS = {  # name: (dtype, share_prefix)
    "float32_whole": ("float32", False),
    "bfloat16_whole": ("bfloat16", False),
    "bfloat16_shared": ("bfloat16", True),
}


def main() -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args()

    loaded = load_model(None, dtype="float32", device="cpu")
    records = load_dataset("triviaqa_dev")[: args.questions]
    prompts = [render_prompt(loaded.tokenizer, user_text(r.question, PAPER_SUFFIX)) for r in records]
    params = SamplingParams(temperature=0.0, max_new_tokens=32)
    texts: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    for name, (dtype, share) in CONFIGS.items():
        loaded.model.to(getattr(torch, dtype))
        backend = HFBackend(loaded.model, loaded.tokenizer, batch_size=args.batch_size, share_prefix=share)
        t0 = time.perf_counter()
        texts[name] = [g[0].text for g in backend.generate(prompts, params, progress=False)]
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"{name:<18}{seconds[name]:>8.1f} s", flush=True)
    verdicts = {name: [match_alias(t, r.answers, r.question) is not None for t, r in zip(ts, records)]
                for name, ts in texts.items()}
    names = list(CONFIGS)
    pairs = {f"{a} vs {b}": {"same_text": sum(x == y for x, y in zip(texts[a], texts[b])),
                             "same_verdict": sum(x == y for x, y in zip(verdicts[a], verdicts[b]))}
             for i, a in enumerate(names) for b in names[i + 1:]}
    n = len(records)
    print(f"\n{n} questions, greedy, <= 32 new tokens, {torch.get_num_threads()} threads")
    for name in names:
        print(f"{name:<18} correct {sum(verdicts[name]):>4}   {seconds[name]:>6.1f} s")
    for pair, v in pairs.items():
        print(f"{pair:<40} same text {v['same_text']:>4}/{n}   same verdict {v['same_verdict']:>4}/{n}")
    result: dict[str, object] = {
        "questions": n, "correct": {k: sum(v) for k, v in verdicts.items()}, "seconds": seconds, "pairs": pairs,
        "device": f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads",
    }
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
