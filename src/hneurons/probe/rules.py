"""C rules beside the paper's: K-fold CV with the one-standard-error rule, and stability selection.

Why: the paper's rule (arXiv 2512.01797, §6.1.3) decides C on a few dozen held-out questions plus a
suppression term that, with a weak model, rests on a handful of correct answers; two runs of the
same code then pick C an order of magnitude apart. Both rules here use every labelled question:

* ``cv1se``: group K-fold over questions (a question's answer and other rows share a fold; folds
  stratified by label), accuracy on each fold's answer rows for every C of the path, and the
  sparsest (smallest) C whose mean is within one standard error of the best (Hastie, Tibshirani &
  Friedman, ESL §7.10). The suppression term is added to the mean only where it can resolve a change
  (:func:`suppression_gate`).
* ``stability``: Meinshausen & Bühlmann (2010) stability selection: B fits on random halves of the
  questions; a neuron is stable at C when it has a positive weight in at least ``pi`` of them. With
  q(C) the mean number of positive weights per half-sample fit and p neurons, the expected number of
  falsely selected neurons is at most ``q^2 / ((2 pi - 1) p)`` (their Theorem 1, under its
  exchangeability assumption); the rule takes the largest C whose bound is at most ``ev_max``.

Resamples are row weights (0/1), so the feature matrix is never copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hneurons.core.rows import gather
from hneurons.errors import ConfigError
from hneurons.probe.path import PathPoint, fit_path

C_RULES = ("paper", "cv1se", "stability")


def suppression_gate(baseline_acc: float | None, n_questions: int, min_correct: int) -> tuple[bool, str]:
    """Whether the suppression term can resolve a change, and why (recorded beside every rule)."""
    if baseline_acc is None or n_questions <= 0:
        return False, "off: probe.suppression_questions = 0"
    correct = int(round(baseline_acc * n_questions))
    if correct < min_correct:
        return False, (f"off: the unsuppressed model answers {correct} of {n_questions} questions correctly, fewer "
                       f"than probe.suppression_min_correct = {min_correct}; one question moves the term by "
                       f"{1 / n_questions:.3f}")
    return True, f"on: the unsuppressed model answers {correct} of {n_questions} questions correctly"


def _question_folds(groups: np.ndarray, y_q: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold of every question, label-stratified: each class is shuffled and dealt round-robin."""
    fold = np.empty(y_q.size, dtype=np.int64)
    start = 0
    for cls in (1, 0):
        idx = rng.permutation(np.flatnonzero(y_q == cls))
        fold[idx] = (start + np.arange(idx.size)) % k
        start = (start + idx.size) % k
    return fold


def _question_labels(y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Label of each question: the label of its answer row (answer rows come first, one per question)."""
    n_q = int(groups.max()) + 1
    return np.asarray(y[:n_q]).astype(np.int64)


def _accuracy(X: Any, y: np.ndarray, rows: np.ndarray, pt: PathPoint) -> float:
    nz = np.flatnonzero(pt.coef)
    z = np.full(rows.size, pt.intercept)
    if nz.size:
        z += gather(X, nz, rows) @ pt.coef[nz]
    return float(((z > 0).astype(int) == y[rows]).mean())


def cv_one_se(X: Any, y: Any, groups: Any, Cs: Sequence[float], folds: int = 5, seed: int = 0,
              suppression: dict[float, float] | None = None, **probe_kwargs: Any) -> dict:
    """K-fold CV over questions with the one-standard-error rule (see module docstring)."""
    y, groups = np.asarray(y), np.asarray(groups)
    y_q = _question_labels(y, groups)
    if folds < 2 or min(int(y_q.sum()), int((1 - y_q).sum())) < folds:
        raise ConfigError(f"probe.cv_folds={folds}: need 2 <= folds <= the questions of the smaller class "
                          f"({min(int(y_q.sum()), int((1 - y_q).sum()))})")
    fold_q = _question_folds(groups, y_q, folds, np.random.default_rng(seed))
    row_fold = fold_q[groups]
    Cs = sorted(float(c) for c in Cs)
    acc = np.empty((folds, len(Cs)))
    for f in range(folds):
        pts = fit_path(X, y, Cs, sample_weight=(row_fold != f).astype(np.float64), **probe_kwargs)
        test = np.flatnonzero(row_fold[: y_q.size] == f)  # the fold's answer rows
        acc[f] = [_accuracy(X, y, test, pt) for pt in pts]
    mean, se = acc.mean(axis=0), acc.std(axis=0, ddof=1) / np.sqrt(folds)
    score = mean + (np.array([suppression[c] for c in Cs]) if suppression else 0.0)
    best = int(np.argmax(score))
    chosen = next(i for i in range(len(Cs)) if score[i] >= score[best] - se[best])
    return {"C": Cs[chosen], "best_C": Cs[best], "folds": folds, "Cs": Cs, "cv_acc_mean": mean.tolist(),
            "cv_acc_se": se.tolist(), "score": np.asarray(score, dtype=float).tolist(),
            "suppression_used": bool(suppression)}


def stability_selection(X: Any, y: Any, groups: Any, Cs: Sequence[float], subsamples: int = 20, pi: float = 0.6,
                        ev_max: float = 1.0, seed: int = 0, **probe_kwargs: Any) -> dict:
    """Meinshausen–Bühlmann stability selection over the C path (see module docstring)."""
    if not 0.5 < pi <= 1.0:
        raise ConfigError(f"probe.stability_pi={pi}: must be in (0.5, 1] for the false-selection bound")
    if subsamples < 2:
        raise ConfigError(f"probe.stability_subsamples={subsamples}: must be >= 2")
    y, groups = np.asarray(y), np.asarray(groups)
    y_q = _question_labels(y, groups)
    p = int(np.shape(X)[1])
    Cs = sorted(float(c) for c in Cs)
    rng = np.random.default_rng(seed)
    counts = np.zeros((len(Cs), p), dtype=np.int32)
    for _ in range(subsamples):
        keep = np.zeros(y_q.size, dtype=bool)
        for cls in (0, 1):  # half of each class's questions, without replacement
            idx = np.flatnonzero(y_q == cls)
            keep[rng.choice(idx, idx.size // 2, replace=False)] = True
        pts = fit_path(X, y, Cs, sample_weight=keep[groups].astype(np.float64), **probe_kwargs)
        for i, pt in enumerate(pts):
            counts[i, pt.coef > 0] += 1
    freq = counts / subsamples
    q = counts.sum(axis=1) / subsamples
    bound = q**2 / ((2.0 * pi - 1.0) * p)
    ok = np.flatnonzero(bound <= ev_max)
    i = int(ok.max()) if ok.size else 0
    stable = np.flatnonzero(freq[i] >= pi)
    return {"C": Cs[i], "Cs": Cs, "subsamples": subsamples, "pi": pi, "ev_max": ev_max,
            "mean_selected": q.tolist(), "expected_false_bound": bound.tolist(), "bound_met": bool(ok.size),
            "stable": stable.tolist(), "stable_frequency": freq[i, stable].tolist(),
            "n_stable_per_C": [int((fr >= pi).sum()) for fr in freq]}


def count_interval(counts: Sequence[int], level: float = 0.95) -> list[float] | None:
    """Percentile interval of the neuron count over resamples (None with fewer than two)."""
    if len(counts) < 2:
        return None
    lo, hi = np.percentile(np.asarray(counts, dtype=float), [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]
