"""Cost of α-scaling during generation on the embedded model: plain vs hook vs weight edit.

Greedy generation of the same left-padded batch of TriviaQA prompts (paper prompt, chat
template) three ways: no intervention, :func:`~hneurons.core.hooks.scale_neurons` (forward pre-hook on
every down-projection holding a scaled neuron) and :func:`~hneurons.core.hooks.scale_down_weights`
(the official code's weight edit, undone on exit). Every run is forced to generate exactly
``--max-new-tokens`` tokens per prompt (``min_new_tokens``), so the three count the same tokens
and only time differs. Runs are interleaved and the median of ``--repeats`` is reported.

    python benchmarks/intervention.py --prompts 16 --max-new-tokens 32 --json

The neuron set is ``--neurons`` random neurons (seeded) spread over all layers; the paper's
H-Neuron sets are about 9-240 neurons (the paper's Table 1 ratios × neuron counts). Target: hook ≤ 1.10 × plain time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hneurons.config import PAPER_SUFFIX  # noqa: E402
from hneurons.data import load_dataset  # noqa: E402
from hneurons.core.hooks import scale_down_weights, scale_neurons  # noqa: E402
from hneurons.core.models import load_model  # noqa: E402
from hneurons.text.prompts import render_prompt, user_text  # noqa: E402
from hneurons.text.spans import add_special_tokens_for  # noqa: E402


def batch(tokenizer, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded input ids and attention mask."""
    enc = [tokenizer(p, add_special_tokens=add_special_tokens_for(tokenizer, p))["input_ids"] for p in prompts]
    width = max(map(len, enc))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(enc), width), pad, dtype=torch.long)
    mask = torch.zeros((len(enc), width), dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, width - len(e):] = torch.tensor(e)
        mask[i, width - len(e):] = 1
    return ids.to(device), mask.to(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model path (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--neurons", type=int, default=38, help="size of the scaled neuron set")
    ap.add_argument("--alpha", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line of results")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    model, tok, layout = loaded.model, loaded.tokenizer, loaded.layout
    print(f"loaded {loaded.name} ({loaded.dtype}, {loaded.device}) in {time.perf_counter() - t0:.1f} s")
    questions = load_dataset("triviaqa_test", limit=args.prompts)
    prompts = [render_prompt(tok, user_text(q.question, PAPER_SUFFIX), chat=loaded.has_chat_template) for q in questions]
    ids, mask = batch(tok, prompts, loaded.device)
    neurons = np.sort(np.random.default_rng(0).choice(layout.n_neurons, size=args.neurons, replace=False))
    layers = len({int(n) // layout.d_ff for n in neurons})
    n_tok = args.max_new_tokens
    kw = dict(max_new_tokens=n_tok, min_new_tokens=n_tok, do_sample=False,
              pad_token_id=ids[0, 0].item(), attention_mask=mask)

    conditions = {
        "plain": contextlib.nullcontext,
        "hook": lambda: scale_neurons(layout, neurons, args.alpha),
        "weights": lambda: scale_down_weights(layout, neurons, args.alpha),
    }
    outputs: dict[str, torch.Tensor] = {}

    def once(name: str) -> float:
        sync = torch.cuda.synchronize if loaded.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        with conditions[name](), torch.inference_mode():
            out = model.generate(input_ids=ids, **kw)
        sync()
        outputs[name] = out[:, ids.shape[1]:].cpu()
        seconds = time.perf_counter() - start
        print(f"  {name}: {seconds:.2f} s", flush=True)
        return seconds

    print("warm-up", flush=True)
    for name in conditions:  # warm-up (kernels, caches)
        once(name)
    times: dict[str, list[float]] = {name: [] for name in conditions}
    for _ in range(args.repeats):
        for name in conditions:
            times[name].append(once(name))
    total = len(prompts) * n_tok
    med = {name: statistics.median(t) for name, t in times.items()}
    rate = {name: total / s for name, s in med.items()}
    same = torch.equal(outputs["hook"], outputs["weights"])
    changed = not torch.equal(outputs["hook"], outputs["plain"])
    print(f"{len(prompts)} prompts × {n_tok} tokens, {args.neurons} neurons in {layers} layers, α = {args.alpha}")
    for name in conditions:
        print(f"  {name:8s} {rate[name]:8.1f} tok/s  (median {med[name]:.2f} s of {[round(t, 2) for t in times[name]]})")
    ratio = med["hook"] / med["plain"]
    ratio_min = min(times["hook"]) / min(times["plain"])  # fastest runs: least disturbed by other load
    print(f"hook / plain time = {ratio:.3f} median, {ratio_min:.3f} fastest (target ≤ 1.10); "
          f"weights / plain = {med['weights'] / med['plain']:.3f}")
    print(f"hook tokens == weight-edit tokens: {same}; intervention changed the output: {changed}")
    if args.json:
        device = torch.cuda.get_device_name(loaded.device) if loaded.device.type == "cuda" else platform.processor() or "cpu"
        print(json.dumps({"plain_tok_s": round(rate["plain"], 2), "hook_tok_s": round(rate["hook"], 2),
                          "weights_tok_s": round(rate["weights"], 2), "ratio": round(ratio, 4), "ratio_min": round(ratio_min, 4),
                          "device": f"{loaded.device.type}: {device}", "model": loaded.name,
                          "prompts": len(prompts), "new_tokens": n_tok, "neurons": args.neurons,
                          "hook_equals_weights": same}))


if __name__ == "__main__":
    main()
