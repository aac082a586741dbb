"""The probe at the paper's scale: a synthetic float16 feature store, the C path from it, planted neurons.

Usage::

    python benchmarks/scale.py --shape 1b|8b|70b|moe|tiny [--rows 4000] [--memmap DIR] [--device cpu|cuda]
                               [--store DIR] [--n-C 8] [--planted 40] [--json]

Stages, each timed (wall seconds) and the fit in a forked child so its peak RSS is its own:

* ``write``: a store of ``--rows`` 3-vs-1 rows (half the questions hallucinated; answer + other row
  per question) written through :meth:`FeatureStore.write`, float16 chunks of 256 questions, with
  CETT-like marginals (``benchmarks/probe.py``) and ``--planted`` neurons whose mean is higher in
  hallucinated answer rows by 0.3, 0.5 or 1.0 SD (a third each);
* ``load``: :meth:`FeatureStore.load_rows` (float16 in memory, or a memory-mapped file with ``--memmap``);
* ``path``: :func:`fit_path` over the probe stage's default grid (``default_C_grid``, ``n_Cs`` values),
  seconds per C; C is then chosen by held-out accuracy on a separately generated held-out set (the
  paper's rule without its suppression term, which needs a model);
* ``tight``: the chosen C refitted to ``tol=1e-8`` from the path's solution: relative objective
  difference (the path's duality-gap certificate is over every column, so screening cannot hide a
  violator; this checks it);
* planted recall and false discoveries of the probe's positive set at the chosen C, beside a
  univariate baseline: the same number of neurons ranked by Welch's t (hallucinated answer rows vs
  the rest).

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from hneurons.core.rows import release_pages
from hneurons.core.store import FeatureStore, StoreShape
from hneurons.probe.design import Design, row_chunk, rows_from_stack
from hneurons.probe.estimator import HNeuronProbe
from hneurons.probe.path import default_C_grid, fit_path

SHAPES = {  # (layers, neurons per layer): the paper's models
    "tiny": (4, 512),
    "1b": (16, 8192),  # Llama-3.2-1B
    "8b": (32, 14336),  # Llama-3.1-8B
    "70b": (80, 28672),  # Llama-3.3-70B
    "moe": (48, 128 * 768),  # Qwen3-30B-A3B, experts counted
}
EFFECTS = (0.3, 0.5, 1.0)
CHUNK_Q = 256  # questions per store chunk, as the pipeline's default


def marginals(p: int, planted: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron mean and SD of raw CETT (gamma means ~0.013); planted neurons at the typical mean."""
    rng = np.random.default_rng(seed)
    mu = rng.gamma(4.0, 0.013 / 4.0, size=p).astype(np.float32)
    mu[planted] = 0.013
    return mu, (0.005 * mu / 0.013).astype(np.float32) + np.float32(1e-4)


def planted_set(p: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` planted neuron indices and the effect size (in SD) of each."""
    rng = np.random.default_rng(seed + 1)
    idx = np.sort(rng.choice(p, k, replace=False))
    return idx, np.array([EFFECTS[i % len(EFFECTS)] for i in range(k)], dtype=np.float32)


def gen_rows(rng: np.random.Generator, hall: np.ndarray, mu, sd, planted, effect, answer: bool) -> np.ndarray:
    """Rows for questions with labels ``hall`` (1 = hallucinated); the planted shift only in hallucinated answers."""
    m = hall.size
    factor = rng.normal(0.0, 0.15, size=(m, 1)).astype(np.float32)
    X = rng.standard_normal((m, mu.size), dtype=np.float32)
    X *= sd
    X += mu * (1 + factor)
    if answer:
        X[np.ix_(np.flatnonzero(hall), planted)] += effect * sd[planted]
    return X


def question_labels(n_q: int, seed: int) -> np.ndarray:
    lab = np.zeros(n_q, dtype=np.int64)
    lab[: n_q // 2] = 1
    return np.random.default_rng(seed + 2).permutation(lab)


def write_store(path: Path, shape: tuple[int, int], n_q: int, k: int, seed: int) -> np.ndarray:
    """Write the synthetic store; returns the question labels."""
    layers, d_ff = shape
    p = layers * d_ff
    planted, effect = planted_set(p, k, seed)
    mu, sd = marginals(p, planted, seed)
    labels = question_labels(n_q, seed)

    def chunks():
        for c, s in enumerate(range(0, n_q, CHUNK_Q)):
            rng = np.random.default_rng([seed, c])
            lab = labels[s : s + CHUNK_Q]
            yield ([f"q{i}" for i in range(s, s + lab.size)],
                   {"answer": gen_rows(rng, lab, mu, sd, planted, effect, True).astype(np.float16),
                    "other": gen_rows(rng, lab, mu, sd, planted, effect, False).astype(np.float16)})

    FeatureStore(path).write(chunks(), StoreShape(layers, d_ff, "synthetic"))
    return labels


def heldout(shape: tuple[int, int], n_q: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Answer rows of fresh held-out questions (float16, as the store) and their labels."""
    p = shape[0] * shape[1]
    planted, effect = planted_set(p, k, seed)
    mu, sd = marginals(p, planted, seed)
    lab = question_labels(n_q, seed + 7)
    rng = np.random.default_rng([seed, 10**6])
    out = np.empty((n_q, p), dtype=np.float16)
    for s in range(0, n_q, 64):  # in blocks: a float32 copy of 400 x 2M would cost more than the fit
        out[s : s + 64] = gen_rows(rng, lab[s : s + 64], mu, sd, planted, effect, True)
    return out, lab


def welch_top(X: np.ndarray, y: np.ndarray, m: int) -> np.ndarray:
    """The ``m`` neurons with the largest Welch t (class 1 minus class 0), from row-chunked sums."""
    p = X.shape[1]
    s = {c: np.zeros(p) for c in (0, 1)}
    s2 = {c: np.zeros(p) for c in (0, 1)}
    step = row_chunk(X)
    for a in range(0, X.shape[0], step):
        blk = np.asarray(X[a : a + step], dtype=np.float32)
        release_pages(X, a, a + step)
        for c in (0, 1):
            rows = blk[y[a : a + step] == c]
            s[c] += rows.sum(axis=0, dtype=np.float64)
            s2[c] += np.square(rows, dtype=np.float64).sum(axis=0)
    n = {c: int((y == c).sum()) for c in (0, 1)}
    mean = {c: s[c] / n[c] for c in (0, 1)}
    var = {c: np.maximum(s2[c] / n[c] - mean[c] ** 2, 1e-30) * n[c] / (n[c] - 1) for c in (0, 1)}
    t = (mean[1] - mean[0]) / np.sqrt(var[1] / n[1] + var[0] / n[0])
    return np.argpartition(-t, m - 1)[:m] if m else np.empty(0, dtype=np.int64)


def recall(selected: np.ndarray, planted: np.ndarray, effect: np.ndarray) -> dict:
    sel = set(np.asarray(selected).tolist())
    out = {f"recall_{e:g}sd": float(np.mean([int(f) in sel for f in planted[effect == e]])) for e in EFFECTS}
    out["recall_all"] = float(np.mean([int(f) in sel for f in planted]))
    out["false_discoveries"] = int(len(sel - set(planted.tolist())))
    out["n_selected"] = len(sel)
    return out


def _fit_child(conn, args: argparse.Namespace, store_dir: Path) -> None:
    """Load, fit the path, pick C, refit tight, score planted recall; sends the figures through ``conn``."""
    warnings.simplefilter("ignore")
    out: dict = {}
    backend = "numpy" if args.device == "cpu" else "torch"
    t0 = time.perf_counter()
    qids, stack = FeatureStore(store_dir).load_rows(["answer", "other"], memmap=args.memmap)
    labels = question_labels(len(qids), args.seed)
    X, y, _ = rows_from_stack(stack, labels, "3-vs-1")
    out["load_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    Cs = default_C_grid(X, y, n=args.n_C).tolist()
    out["grid_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    points = fit_path(X, y, Cs, mode="3-vs-1", backend=backend)
    out["path_s"] = time.perf_counter() - t0
    out["per_C"] = [{"C": pt.C, "seconds": pt.seconds, "n_positive": pt.n_positive, "objective": pt.objective}
                    for pt in points]
    HX, hy = heldout(SHAPES[args.shape], args.heldout, args.planted, args.seed)
    acc = [float(((np.asarray(HX[:, np.flatnonzero(pt.coef)], dtype=np.float64) @ pt.coef[pt.coef != 0]
                   + pt.intercept > 0) == hy).mean()) for pt in points]
    best = max(range(len(points)), key=lambda i: (acc[i], -points[i].C))
    pt = points[best]
    out.update(chosen_C=pt.C, heldout_acc=acc)
    t0 = time.perf_counter()
    tight = HNeuronProbe(C=pt.C, tol=1e-8, backend=backend).fit(X, y, warm_start=(pt.coef, pt.intercept),
                                                                 _design=Design(X) if backend == "numpy" else None)
    out["tight_s"] = time.perf_counter() - t0
    out["objective_rel_vs_tight"] = (pt.objective - tight.objective_) / tight.objective_
    out["support_equal_tight"] = bool(np.array_equal(np.flatnonzero(pt.coef), np.flatnonzero(tight.coef_)))
    planted, effect = planted_set(X.shape[1], args.planted, args.seed)
    pos = np.flatnonzero(pt.coef > 0)
    out["probe"] = recall(pos, planted, effect)
    t0 = time.perf_counter()
    out["ttest"] = recall(welch_top(X, y, pos.size), planted, effect)
    out["ttest_s"] = time.perf_counter() - t0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if backend == "torch":
        import torch

        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    conn.send(out)
    conn.close()


def _write_child(conn, args: argparse.Namespace, store_dir: Path) -> None:
    t0 = time.perf_counter()
    write_store(store_dir, SHAPES[args.shape], args.rows // 2, args.planted, args.seed)
    conn.send({"write_s": time.perf_counter() - t0,
               "write_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0})
    conn.close()


def in_child(target, *args) -> dict:
    """Run ``target(conn, *args)`` in a forked child (its own peak RSS); its dict comes back."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(child, *args))
    proc.start()
    child.close()
    try:
        res = parent.recv()
    except EOFError:
        proc.join()
        raise SystemExit(f"{target.__name__} died (exit {proc.exitcode}); out of memory?") from None
    proc.join()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    ap.add_argument("--rows", type=int, default=4000, help="training rows (3-vs-1: 2 per question)")
    ap.add_argument("--heldout", type=int, default=400, help="held-out questions for the C choice")
    ap.add_argument("--planted", type=int, default=40)
    ap.add_argument("--n-C", type=int, default=8)
    ap.add_argument("--memmap", default=None, help="folder for a memory-mapped row matrix (else float16 in RAM)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: the torch path")
    ap.add_argument("--store", default=None, help="store folder (kept, and reused if complete); default: a temp dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    args = ap.parse_args(argv)
    layers, d_ff = SHAPES[args.shape]
    tmp = None
    if args.store is None:
        tmp = tempfile.mkdtemp(prefix=f"hneurons-scale-{args.shape}-")
        store_dir = Path(tmp) / "train"
    else:
        store_dir = Path(args.store)
    res: dict = {"benchmark": "scale", "shape": args.shape, "rows": args.rows, "neurons": layers * d_ff,
                 "float16_matrix_mb": args.rows * layers * d_ff * 2 / 2**20, "device": args.device,
                 "memmap": args.memmap, "planted": args.planted}
    try:
        if FeatureStore(store_dir).exists():
            res["write_s"] = None
        else:
            res.update(in_child(_write_child, args, store_dir))
        print(f"store {store_dir}: {args.rows} x {layers * d_ff} float16 ({res['float16_matrix_mb']:.0f} MiB); "
              f"write {res['write_s']}", flush=True)
        res.update(in_child(_fit_child, args, store_dir))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    res["rss_over_matrix"] = res["peak_rss_mb"] / res["float16_matrix_mb"]
    for pt in res["per_C"]:
        print(f"  C={pt['C']:.4g}: {pt['seconds']:.1f}s, {pt['n_positive']} positive")
    print(f"path {res['path_s']:.1f}s  peak RSS {res['peak_rss_mb']:.0f} MiB ({res['rss_over_matrix']:.2f}x float16)  "
          f"C={res['chosen_C']:.4g}  obj rel vs tight {res['objective_rel_vs_tight']:+.1e}")
    print(f"  probe recall {res['probe']}\n  t-test recall {res['ttest']}")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
