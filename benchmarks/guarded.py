"""Cost of guarded generation on the embedded model: plain greedy vs guarded (α = 1, probe recorded).

Both decode the same prompts with the same loop, so they produce the same tokens; the guarded run
also records the CETT of the probe's non-zero neurons at every step, feeds the last token of rows
cut by the length limit once more, and applies the probe. Target: guarded_tok_s ≥ plain_tok_s / 1.10.

    python benchmarks/guarded.py --prompts 16 --tokens 32 --json
    python benchmarks/guarded.py --run runs/default --json     # the run's real probe

Without ``--run`` a synthetic probe (random sparse weights on ~30 of the model's neurons) stands
in, so the benchmark needs nothing but the embedded model. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hneurons.config import PAPER_SUFFIX  # noqa: E402
from hneurons.core.generation import HFBackend, SamplingParams  # noqa: E402
from hneurons.core.models import load_model  # noqa: E402
from hneurons.data import load_dataset  # noqa: E402
from hneurons.probe.estimator import HNeuronProbe  # noqa: E402
from hneurons.apply.guard import guarded_generate  # noqa: E402
from hneurons.apply.state import ScoringState, load_state  # noqa: E402

def load_questions(n: int) -> list[str]:
    """The first ``n`` packaged TriviaQA dev questions."""
    return [r.question for r in load_dataset("triviaqa_dev")[:n]]


def synthetic_probe(n_neurons: int, d_ff: int, n_nonzero: int = 30, seed: int = 0) -> HNeuronProbe:
    """Random sparse weights (half positive) over all neurons, like a fitted probe's support."""
    rng = np.random.default_rng(seed)
    probe = HNeuronProbe(C=0.01, d_ff=d_ff)
    coef = np.zeros(n_neurons)
    idx = rng.choice(n_neurons, n_nonzero, replace=False)
    coef[idx] = rng.normal(0, 20, n_nonzero)
    coef[idx[: n_nonzero // 2]] = np.abs(coef[idx[: n_nonzero // 2]])
    probe.coef_, probe.intercept_ = coef, -1.0
    probe.classes_, probe.n_features_in_ = np.array([0, 1]), n_neurons
    return probe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each; the fastest counts")
    ap.add_argument("--run", type=Path, default=None, help="run directory with a fitted probe (default: synthetic)")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args()

    loaded = load_model(None, dtype=args.dtype, device=args.device)
    if args.run is not None:
        state = load_state(args.run, model=loaded)
        source = str(args.run)
    else:
        state = ScoringState(loaded, synthetic_probe(loaded.layout.n_neurons, loaded.layout.d_ff),
                             chat=True, suffix=PAPER_SUFFIX, max_new_tokens=args.tokens)
        source = "synthetic"
    questions = load_questions(args.prompts)
    prompts = [state.prompt(q) for q in questions]
    params = SamplingParams(temperature=0.0, max_new_tokens=args.tokens)
    backend = HFBackend(loaded.model, loaded.tokenizer, batch_size=args.prompts)
    sync = torch.cuda.synchronize if loaded.device.type == "cuda" else (lambda: None)

    # wall time, plus this process's CPU time: on a shared CPU machine other jobs swing wall time
    # by several x, while CPU seconds still measure the work each mode does
    def plain() -> tuple[float, int, list[str], float]:
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        gens = backend.generate(prompts, params, progress=False)
        sync()
        return (time.perf_counter() - t0, sum(len(g[0].token_ids) for g in gens), [g[0].text for g in gens],
                time.process_time() - c0)

    def guarded() -> tuple[float, int, list[str], float]:
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        res = guarded_generate(state, questions, max_new_tokens=args.tokens, batch_size=args.prompts)
        sync()
        return (time.perf_counter() - t0, sum(r["completion_tokens"] for r in res), [r["response"] for r in res],
                time.process_time() - c0)

    plain(), guarded()  # warm-up (kernels, allocator, tokenizer caches)
    p_runs, g_runs = [], []
    for _ in range(args.repeats):  # interleaved so background load hits both alike
        p_runs.append(plain())
        g_runs.append(guarded())
    p_best, g_best = min(p_runs), min(g_runs)
    same = p_best[2] == g_best[2]
    plain_tok_s, guarded_tok_s = p_best[1] / p_best[0], g_best[1] / g_best[0]
    ratio = plain_tok_s / guarded_tok_s
    cpu_ratio = min(r[3] for r in g_runs) / min(r[3] for r in p_runs)
    device = torch.cuda.get_device_name(0) if loaded.device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"model {loaded.name} ({str(loaded.dtype).replace('torch.', '')}) on {device}; probe {source}: "
          f"{len(state.record)} recorded neurons, {len(state.h_neurons)} H-Neurons")
    print(f"{'mode':<10}{'seconds':>10}{'tokens':>8}{'tok/s':>10}")
    print(f"{'plain':<10}{p_best[0]:>10.2f}{p_best[1]:>8}{plain_tok_s:>10.1f}")
    print(f"{'guarded':<10}{g_best[0]:>10.2f}{g_best[1]:>8}{guarded_tok_s:>10.1f}")
    print(f"cost ratio plain/guarded = {ratio:.3f} (target ≤ 1.10); CPU-seconds ratio guarded/plain = "
          f"{cpu_ratio:.3f}; identical text: {same}")
    if args.json:
        print(json.dumps({"plain_tok_s": round(plain_tok_s, 2), "guarded_tok_s": round(guarded_tok_s, 2),
                          "ratio": round(ratio, 4), "cpu_ratio": round(cpu_ratio, 4), "identical_text": same, "prompts": args.prompts,
                          "tokens": args.tokens, "device": device, "model": loaded.name,
                          "dtype": str(loaded.dtype).replace("torch.", ""), "probe": source}))


if __name__ == "__main__":
    main()
