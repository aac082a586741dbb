"""Benchmark the L1 probe solvers on CETT-like data: speed, memory and agreement with liblinear.

Usage::

    python benchmarks/probe.py [--json] [--n-questions 1000] [--n-features 46080] [--n-C 8]
                               [--span 100] [--solvers newton_cd,liblinear] [--features PATH]

Default data mimics the paper's 3-vs-1 training set for a 46,080-neuron model (e.g. 36 x 1,280):
4,000 rows (1,000 hallucinated + 1,000 faithful questions, answer + other rows), float32, raw CETT
scale (mean ~0.013, sd ~0.005, a shared per-row factor), 300 informative neurons. ``--features``
instead loads a ``.npz`` with either ``X`` and ``y`` (rows already built) or ``answer``, ``other``,
``labels`` (built 3-vs-1 here).

For every solver we measure, in a forked child (so peak RSS is per solver):
* ``fit_s_one_C`` - one cold fit at the largest C of the grid;
* ``fit_s_path`` - the whole grid (warm-started for newton_cd; liblinear has no warm start, so its
  path is only run with ``--liblinear-path``, else null);
* ``objective`` at the largest C and ``jaccard_vs_liblinear`` of the positive-weight sets there.
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
import warnings

import numpy as np

from hneurons.probe.estimator import HNeuronProbe, build_rows, l1_logistic_objective, liblinear_l1
from hneurons.probe.path import default_C_grid, fit_path


def synthetic_cett(n_questions: int, n_features: int, n_informative: int, seed: int = 0):
    """3-vs-1 rows shaped like raw CETT features (see module docstring)."""
    rng = np.random.default_rng(seed)
    n = 4 * n_questions
    mu = rng.gamma(4.0, 0.013 / 4.0, size=n_features).astype(np.float32)
    sd = (0.005 * mu / 0.013).astype(np.float32) + np.float32(1e-4)
    factor = rng.normal(0.0, 0.15, size=n).astype(np.float32)
    X = np.empty((n, n_features), dtype=np.float32)
    for s in range(0, n, 256):
        e = min(n, s + 256)
        X[s:e] = rng.standard_normal((e - s, n_features), dtype=np.float32) * sd + mu * (1 + factor[s:e, None])
    y = np.zeros(n, dtype=np.int64)
    y[:n_questions] = 1  # answer rows of hallucinated questions
    inf = rng.choice(n_features, n_informative, replace=False)
    shift = rng.choice([-1.0, 1.0], n_informative) * rng.uniform(0.1, 0.5, n_informative)
    X[:n_questions, inf] += (shift * sd[inf]).astype(np.float32)
    return X, y


def load_features(path: str):
    """``.npz`` with X/y, or answer/other/labels (3-vs-1 rows are built here)."""
    with np.load(path) as z:
        if "X" in z:
            return np.asarray(z["X"]), np.asarray(z["y"])
        X, y, _ = build_rows(z["answer"], z["other"], z["labels"], "3-vs-1")
        return X, y


# "liblinear" is the official call; "liblinear_tight" runs it to near-exact convergence, the fair
# reference for objective/support agreement (liblinear at tol=1e-4 stops ~1e-3 short at large C).
_LIB_KW = {"liblinear": {}, "liblinear_tight": {"tol": 1e-8, "max_iter": 100000}}


def _run_solver(conn, solver: str, X, y, Cs, do_path: bool) -> None:
    """Child process body: fit, time, report objective / support / peak RSS through the pipe."""
    warnings.simplefilter("ignore")
    out: dict = {"solver": solver}
    C = float(Cs[-1])
    t0 = time.perf_counter()
    if solver.startswith("liblinear"):
        m = liblinear_l1(C, **_LIB_KW[solver]).fit(X, y)
        coef, b = m.coef_[0], float(m.intercept_[0])
    else:
        p = HNeuronProbe(C=C, solver=solver).fit(X, y)
        coef, b = p.coef_, p.intercept_
    out["fit_s_one_C"] = time.perf_counter() - t0
    out["objective"] = l1_logistic_objective(X, y, C, coef, b)
    out["n_positive"] = int((coef > 0).sum())
    out["n_nonzero"] = int(np.count_nonzero(coef))
    out["positive"] = np.flatnonzero(coef > 0).tolist()
    out["fit_s_path"] = None
    if do_path:
        t0 = time.perf_counter()
        if solver.startswith("liblinear"):
            out["path_n_positive"] = [int((liblinear_l1(float(c), **_LIB_KW[solver]).fit(X, y).coef_ > 0).sum())
                                      for c in Cs]
        else:
            pts = fit_path(X, y, Cs, solver=solver)
            out["path_n_positive"] = [q.n_positive for q in pts]
            out["path_objective_at_max_C"] = pts[-1].objective
        out["fit_s_path"] = time.perf_counter() - t0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    conn.send(out)
    conn.close()


def run_isolated(solver: str, X, y, Cs, do_path: bool) -> dict:
    """Run one solver in a forked child so its peak RSS is its own (plus the shared data pages)."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_run_solver, args=(child, solver, X, y, Cs, do_path))
    proc.start()
    child.close()
    res = parent.recv()
    proc.join()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="(kept for symmetry; the JSON line is always printed last)")
    ap.add_argument("--n-questions", type=int, default=1000)
    ap.add_argument("--n-features", type=int, default=46080)
    ap.add_argument("--n-informative", type=int, default=300)
    ap.add_argument("--n-C", type=int, default=8, help="points on the C grid")
    ap.add_argument("--span", type=float, default=100.0, help="largest C / C_min of the grid")
    ap.add_argument("--solvers", default="newton_cd,liblinear",
                    help="comma list of newton_cd, liblinear, liblinear_tight (slow: tol=1e-8)")
    ap.add_argument("--liblinear-path", action="store_true", help="also time liblinear over the whole grid (slow)")
    ap.add_argument("--features", default=None, help=".npz with X,y or answer,other,labels")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    if args.features:
        X, y = load_features(args.features)
        source = args.features
    else:
        X, y = synthetic_cett(args.n_questions, args.n_features, args.n_informative, args.seed)
        source = "synthetic"
    gen_s = time.perf_counter() - t0
    Cs = default_C_grid(X, y, n=args.n_C, span=args.span)
    print(f"data {source}: {X.shape[0]} rows x {X.shape[1]} features {X.dtype} ({X.nbytes / 2**20:.0f} MiB, "
          f"{gen_s:.1f}s); C grid {np.round(Cs, 3).tolist()}", flush=True)

    solvers = [s for s in args.solvers.split(",") if s]
    results: dict[str, dict] = {}
    for solver in solvers:
        do_path = not solver.startswith("liblinear") or args.liblinear_path
        results[solver] = run_isolated(solver, X, y, Cs, do_path)
        r = results[solver]
        print(f"  {solver:16s} one C {r['fit_s_one_C']:7.2f}s  path {r['fit_s_path'] if r['fit_s_path'] is None else round(r['fit_s_path'], 2)}s"
              f"  objective {r['objective']:.6f}  positives {r['n_positive']}  peak RSS {r['peak_rss_mb']:.0f} MB",
              flush=True)

    summary = {}
    for solver, r in results.items():
        cmp = {}
        for ref_name in ("liblinear", "liblinear_tight"):
            ref = results.get(ref_name)
            if ref is None:
                continue
            a, b = set(r["positive"]), set(ref["positive"])
            cmp[f"jaccard_vs_{ref_name}"] = len(a & b) / len(a | b) if a | b else 1.0
            cmp[f"objective_rel_vs_{ref_name}"] = (r["objective"] - ref["objective"]) / ref["objective"]
        jac = cmp.get("jaccard_vs_liblinear")
        rel = cmp.get("objective_rel_vs_liblinear")
        summary[solver] = {
            "fit_s_one_C": round(r["fit_s_one_C"], 3),
            "fit_s_path": None if r["fit_s_path"] is None else round(r["fit_s_path"], 3),
            "objective": r["objective"],
            "objective_rel_vs_liblinear": rel,
            "jaccard_vs_liblinear": jac,
            "n_positive": r["n_positive"],
            "n_nonzero": r["n_nonzero"],
            **{k: v for k, v in cmp.items() if "tight" in k},
            "path_n_positive": r.get("path_n_positive"),
            "peak_rss_mb": round(r["peak_rss_mb"], 1),
        }
    print()
    print(f"{'solver':16s} {'one C (s)':>10s} {'path (s)':>10s} {'objective':>14s} {'rel vs lib':>11s} {'Jaccard':>8s} {'RSS MB':>8s}")
    for solver, r in summary.items():
        path_s = "-" if r["fit_s_path"] is None else f"{r['fit_s_path']:.2f}"
        rel = "-" if r["objective_rel_vs_liblinear"] is None else f"{r['objective_rel_vs_liblinear']:+.2e}"
        jac = "-" if r["jaccard_vs_liblinear"] is None else f"{r['jaccard_vs_liblinear']:.3f}"
        print(f"{solver:16s} {r['fit_s_one_C']:10.2f} {path_s:>10s} {r['objective']:14.4f} {rel:>11s} {jac:>8s} {r['peak_rss_mb']:8.0f}")
    print(json.dumps({"benchmark": "probe", "data": {"source": source, "rows": int(X.shape[0]), "features": int(X.shape[1]),
                                                   "dtype": str(X.dtype), "C_grid": [float(c) for c in Cs]},
                      "solvers": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
