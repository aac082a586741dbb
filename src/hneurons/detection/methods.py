"""Detection: evaluation sets, judging, balancing, the methods compared with the H-Neuron probe, metrics.

The paper's Table 1 compares a classifier on the H-Neurons with one on as many random neurons, on
balanced held-out sets from four scenarios (PAPER.md §5). This module holds the plain pieces the
detect stage (:mod:`hneurons.stages.detect`) puts together:

* :data:`EVAL_SETS` — what each evaluation set loads, how it is judged and what a refusal means;
* :func:`judge_response`, :func:`balance` — labels and the balanced subset;
* :class:`TokenStats` — the training-free scores (answer-token log-probability and entropy, stored
  by the CETT pass, :data:`hneurons.core.features.STATS`), response length and the residual stream;
* :data:`BASELINES` — every method side by side, each fitted on the training data and scoring
  evaluation items; :func:`score_metrics` and :func:`selective_answering` — the numbers with
  bootstrap CIs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hneurons import stats
from hneurons.errors import ConfigError, DataError, StageError
from hneurons.core.features import FeatureItem
from hneurons.judges.rules import BROAD_REFUSAL_PHRASES, DEFAULT_REFUSAL_PHRASES, is_refusal, is_refusal_broad, match_alias
from hneurons.probe.estimator import HNeuronProbe, build_rows

# --------------------------------------------------------------------------------------------
# Evaluation sets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSet:
    """One detection set (PAPER.md §5.1).

    ``dataset`` is the :mod:`hneurons.data` registry name (``None`` for the constructed NonExist
    set). ``refusals`` says what a refusal is: ``"drop"`` — removed by the paper's substring filter
    before judging (the QA sets); ``"faithful"`` — a refusal/denial is the right answer (label 0)
    and any confident answer is a hallucination (label 1), judged with ``is_refusal_broad``.
    """

    name: str
    dataset: str | None
    description: str
    refusals: str
    note: str


EVAL_SETS: dict[str, EvalSet] = {
    "triviaqa": EvalSet("triviaqa", "triviaqa_test", "held-out TriviaQA (DPR test split, disjoint from the training pool)",
                        "drop", "rule judge on gold aliases; paper refusal filter drops refusals"),
    "nq_open": EvalSet("nq_open", "nq_open", "NQ-Open dev", "drop",
                       "rule judge on gold aliases; paper refusal filter drops refusals"),
    "bioasq": EvalSet("bioasq", "bioasq", "BioASQ factoid (cross-domain)", "drop",
                      "rule judge on gold aliases; paper refusal filter drops refusals"),
    "smoke": EvalSet("smoke", "smoke_heldout", "easy questions + held-out TriviaQA (smoke preset only)", "drop",
                     "rule judge on gold aliases; paper refusal filter drops refusals"),
    "nonexist": EvalSet("nonexist", None, "questions about fabricated entities (HalluLens style)", "faithful",
                        "label 1 = a confident answer, 0 = refusal/denial (is_refusal_broad); "
                        "the answer span of a refusal is its refusal phrase (or the whole response)"),
}


@dataclass(frozen=True)
class Verdict:
    """A judged response: ``label`` 1 = hallucinated, 0 = faithful, ``None`` = dropped (refusal, no answer)."""

    verdict: str  # correct | wrong | refusal | answer | no_answer | error
    label: int | None
    answer: str | None  # text to locate as the answer span; None → the whole response


def _fold(text: str) -> str:
    # Same length as the input (1:1 character map), so indices carry back to the original text.
    return text.lower().replace("’", "'").replace("‘", "'").replace("´", "'").replace("`", "'")


def refusal_phrase(text: str, phrases: Sequence[str] = DEFAULT_REFUSAL_PHRASES + BROAD_REFUSAL_PHRASES) -> str | None:
    """The earliest refusal/denial phrase in ``text`` as written there (longest on ties), else ``None``."""
    folded = _fold(text)
    best: tuple[int, int] | None = None
    for p in phrases:
        at = folded.find(_fold(p))
        if at >= 0 and (best is None or (at, -len(p)) < (best[0], -best[1])):
            best = (at, len(p))
    return None if best is None else text[best[0]:best[0] + best[1]]


def judge_response(eval_set: EvalSet, question: str, response: str, aliases: Sequence[str],
                   refusal_phrases: Sequence[str] = DEFAULT_REFUSAL_PHRASES,
                   llm_verdict: Callable[[str, str, Sequence[str]], bool | None] | None = None) -> Verdict:
    """Label one response of ``eval_set`` (see :class:`EvalSet` for the refusal handling).

    QA sets: the paper filter (``is_refusal`` with ``refusal_phrases``) drops a response first; then
    the rule judge (whole-word alias match, :func:`hneurons.judges.rules.match_alias`) or, when given,
    ``llm_verdict(question, response, aliases)``. ``Verdict.answer`` (the matched alias or refusal
    phrase) is read only by the label-aware parity span rule ``spans.method = "alias"``; the default
    spans come from the label-blind locator (:func:`hneurons.text.locator.span_by_config`).
    An empty (or whitespace-only) response is "no answer" in every set: dropped like a refusal,
    never labelled — an empty string is neither a hallucination nor a correct answer.
    """
    if not response.strip():
        return Verdict("no_answer", None, None)
    if eval_set.refusals == "faithful":
        if is_refusal_broad(response):
            return Verdict("refusal", 0, refusal_phrase(response))
        return Verdict("answer", 1, None)
    if is_refusal(response, refusal_phrases):
        return Verdict("refusal", None, None)
    alias = match_alias(response, aliases, question)
    if llm_verdict is not None:
        ok = llm_verdict(question, response, aliases)
        if ok is None:
            return Verdict("error", None, None)
        return Verdict("correct", 0, alias) if ok else Verdict("wrong", 1, None)
    return Verdict("correct", 0, alias) if alias is not None else Verdict("wrong", 1, None)


@dataclass(frozen=True)
class Balanced:
    """Outcome of :func:`balance`: kept indices (sorted), class counts before/after, why it failed."""

    indices: np.ndarray
    available: dict[str, int]
    kept: dict[str, int]
    reason: str | None = None


def balance(labels: Sequence[int], per_class: int, min_per_class: int, seed: int) -> Balanced:
    """Equal numbers of faithful (0) and hallucinated (1) items, at most ``per_class`` each.

    The majority class is downsampled uniformly at random (seeded); when the minority has fewer
    than ``min_per_class`` items nothing is kept and ``reason`` says so with the counts.
    """
    y = np.asarray(labels, dtype=np.int64)
    if y.size and not np.isin(y, (0, 1)).all():
        raise DataError("labels must be 0 (faithful) or 1 (hallucinated)")
    if per_class < 1 or min_per_class < 1:
        raise ConfigError(f"detect.per_class ({per_class}) and detect.min_per_class ({min_per_class}) must be >= 1")
    idx = {c: np.flatnonzero(y == c) for c in (0, 1)}
    available = {str(c): int(idx[c].size) for c in (0, 1)}
    minority = min(available.values())
    if minority < min_per_class:
        return Balanced(np.empty(0, dtype=np.int64), available, {"0": 0, "1": 0},
                        f"too few items per class: {available['0']} faithful and {available['1']} hallucinated, "
                        f"need >= {min_per_class} of each (detect.min_per_class); sample more questions "
                        "(detect.n_questions) or lower the minimum")
    n = min(minority, per_class)
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.choice(idx[c], n, replace=False) if idx[c].size > n else idx[c] for c in (0, 1)]))
    return Balanced(keep, available, {"0": n, "1": n})


# --------------------------------------------------------------------------------------------
# Token statistics: log-probability, entropy, length, residual stream (one plain forward)
# --------------------------------------------------------------------------------------------


@dataclass
class TokenStats:
    """Per item: mean answer-token log-probability and predictive entropy, response length in
    tokens, the residual stream averaged over the answer tokens (``[n, d_model]``) and the span's
    shape (``[n, 3]``: span tokens, span/response token ratio, span start offset in the response) —
    the last two are leak guards: if they detect hallucinations, the span rule knows the label."""

    logprob: np.ndarray
    entropy: np.ndarray
    length: np.ndarray
    residual: np.ndarray
    residual_layer: int
    span_shape: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))

    def take(self, idx: np.ndarray) -> TokenStats:
        return TokenStats(self.logprob[idx], self.entropy[idx], self.length[idx], self.residual[idx],
                          self.residual_layer, self.span_shape[idx])


def span_shape(items: Sequence[FeatureItem]) -> np.ndarray:
    """``[n, 3]``: answer-span tokens, span/response token ratio, span start − response start."""
    out = np.zeros((len(items), 3), dtype=np.float64)
    for i, it in enumerate(items):
        a0, a1 = it.answer
        r0, r1 = it.response
        out[i] = (a1 - a0, (a1 - a0) / max(1, r1 - r0), a0 - r0)
    return out


def token_stats(items: Sequence[FeatureItem], residual_layer: int, arrays: dict[str, np.ndarray]) -> TokenStats:
    """:class:`TokenStats` of ``items`` from the statistics their CETT pass stored
    (:meth:`hneurons.core.store.FeatureStore.load_stats`, rows in ``items`` order)."""
    n = len(items)
    if any(len(arrays[k]) != n for k in ("logprob", "entropy", "residual")):
        raise StageError(f"stored token statistics cover {len(arrays['logprob'])} items, not {n}; "
                         "re-run the stage with --force")
    length = np.array([it.response[1] - it.response[0] for it in items], dtype=np.float64)
    return TokenStats(arrays["logprob"].astype(np.float64), arrays["entropy"].astype(np.float64), length,
                      arrays["residual"].astype(np.float32), residual_layer, span_shape(items))


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------


@dataclass
class TrainData:
    """What the methods may fit on: training CETT features and labels, the fitted L1 probe, and
    the token statistics of the training questions' answers (for residual/logprob/entropy/length)."""

    answer: np.ndarray  # [n_questions, n_neurons]
    other: np.ndarray | None
    labels: np.ndarray
    probe: HNeuronProbe
    mode: str
    d_ff: int
    n_layers: int
    stats: TokenStats | None = None
    random_draws: int = 20
    seed: int = 0


@dataclass
class EvalData:
    """What a method scores: answer-region CETT features and token statistics of the items."""

    answer: np.ndarray
    stats: TokenStats | None = None


@dataclass
class Scorer:
    """A fitted method. ``score`` gives one hallucination score per item (higher = more likely
    hallucinated; ``[n, draws]`` for the random baseline). Accuracy predicts hallucination when
    ``score > threshold``: 0.5 for fitted probes (their probability), a threshold fitted on the
    training answers for the one-dimensional scores."""

    score: Callable[[EvalData], np.ndarray]
    threshold: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Baseline:
    name: str
    description: str
    fit: Callable[[TrainData], Scorer]


REFIT_C = 1.0


def _standardised_lr(X: np.ndarray, y: np.ndarray) -> Any:
    """Standardised L2 logistic regression (C = REFIT_C) fitted on ``X``: every refit baseline's model."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=REFIT_C, max_iter=2000)).fit(
        np.asarray(X, dtype=np.float64), y)


def refit_columns(train: TrainData, cols: np.ndarray) -> Any:
    """Logistic regression refit on ``cols`` only, same rows as the probe (3-vs-1 by default).

    Choice (PAPER.md §4.5 leaves it open): the k columns are standardised on the training rows and
    fitted with an L2 penalty at C = 1 (lbfgs). Standardising makes one mild penalty fit neurons whose
    CETT scales differ by orders of magnitude; the L2 term keeps the fit finite when the classes are
    separable. The H-Neuron and random refits use exactly this recipe, so they differ only in columns.
    """
    other = train.other[:, cols] if train.other is not None else None
    X, y, _ = build_rows(train.answer[:, cols], other, train.labels, train.mode)
    return _standardised_lr(X, y)


def h_indices(probe: HNeuronProbe) -> np.ndarray:
    """Flat indices of the H-Neurons (positive probe weight, PAPER.md §4.3)."""
    return np.flatnonzero(np.asarray(probe.coef_) > 0)


def random_neuron_draws(n_neurons: int, k: int, exclude: Sequence[int] | np.ndarray, n_draws: int, seed: int) -> np.ndarray:
    """``[n_draws, k]`` neuron sets, each uniform without replacement over all neurons not in ``exclude``."""
    excl = np.unique(np.asarray(exclude, dtype=np.int64))
    pool = np.setdiff1d(np.arange(n_neurons, dtype=np.int64), excl, assume_unique=True)
    if k < 1 or n_draws < 1:
        raise ConfigError(f"random baseline needs k >= 1 neurons and >= 1 draw, got k={k}, draws={n_draws}")
    if k > pool.size:
        raise DataError(f"cannot draw {k} random neurons from the {pool.size} that are not H-Neurons")
    rng = np.random.default_rng(seed)
    return np.stack([np.sort(rng.choice(pool, k, replace=False)) for _ in range(n_draws)])


def _proba(model: Any, X: np.ndarray) -> np.ndarray:
    return model.predict_proba(np.asarray(X, dtype=np.float64))[:, 1]


def _fit_h_neurons(train: TrainData) -> Scorer:
    cols = h_indices(train.probe)
    if cols.size == 0:
        raise DataError("the probe has no positive weights (no H-Neurons); choose a larger C in the probe stage")
    m = refit_columns(train, cols)
    return Scorer(lambda ev: _proba(m, ev.answer[:, cols]), 0.5, {"k": int(cols.size), "C": REFIT_C})


def _fit_full_l1(train: TrainData) -> Scorer:
    probe = train.probe
    return Scorer(lambda ev: probe.predict_proba(ev.answer)[:, 1], 0.5,
                  {"n_nonzero": probe.n_nonzero_, "n_positive": probe.n_positive_, "C": float(probe.C)})


def _fit_random(train: TrainData) -> Scorer:
    h = h_indices(train.probe)
    if h.size == 0:
        raise DataError("the probe has no H-Neurons, so there is no k for the random baseline")
    draws = random_neuron_draws(train.answer.shape[1], int(h.size), h, max(1, train.random_draws), train.seed)
    models = [refit_columns(train, cols) for cols in draws]

    def score(ev: EvalData) -> np.ndarray:
        return np.column_stack([_proba(m, ev.answer[:, cols]) for m, cols in zip(models, draws)])

    return Scorer(score, 0.5, {"k": int(h.size), "draws": int(draws.shape[0]), "seed": train.seed})


def _fit_best_layer(train: TrainData) -> Scorer:
    """L1 probe (same C and rows as the main probe) on each layer alone; keep the layer with the best
    1-vs-1 accuracy on a held-out fifth of the training questions, then refit it on all of them."""
    y = train.labels
    rng = np.random.default_rng(train.seed)
    val = np.zeros(y.size, dtype=bool)
    for c in (0, 1):
        idx = np.flatnonzero(y == c)
        val[rng.choice(idx, max(1, idx.size // 5), replace=False)] = True
    fit_idx, val_idx = np.flatnonzero(~val), np.flatnonzero(val)
    C = float(train.probe.C)
    accs = []
    for layer in range(train.n_layers):
        cols = slice(layer * train.d_ff, (layer + 1) * train.d_ff)
        other = train.other[fit_idx, cols] if train.other is not None else None
        X, yy, _ = build_rows(train.answer[fit_idx, cols], other, y[fit_idx], train.mode)
        p = HNeuronProbe(C=C, mode=train.mode).fit(X, yy)
        accs.append(float(((p.decision_function(train.answer[val_idx, cols]) > 0) == y[val_idx]).mean()))
    best = int(np.argmax(accs))
    cols = slice(best * train.d_ff, (best + 1) * train.d_ff)
    other = train.other[:, cols] if train.other is not None else None
    X, yy, _ = build_rows(train.answer[:, cols], other, y, train.mode)
    probe = HNeuronProbe(C=C, mode=train.mode).fit(X, yy)
    return Scorer(lambda ev: probe.predict_proba(ev.answer[:, cols])[:, 1], 0.5,
                  {"layer": best, "val_accuracy": accs, "n_nonzero": probe.n_nonzero_, "C": C})


def _need_stats(train: TrainData) -> TokenStats:
    if train.stats is None:
        raise DataError("token statistics of the training answers are missing")
    return train.stats


def _fit_residual(train: TrainData) -> Scorer:
    """Standardised L2 logistic regression (C = 1) on the answer-averaged residual stream, answer rows only."""
    st = _need_stats(train)
    m = _standardised_lr(st.residual, train.labels)
    return Scorer(lambda ev: _proba(m, ev.stats.residual), 0.5, {"layer": st.residual_layer, "C": REFIT_C})


def _fit_span_shape(train: TrainData) -> Scorer:
    """Leak guard: standardised logistic regression (C = 1) on the span's shape alone (answer rows)."""
    st = _need_stats(train)
    m = _standardised_lr(st.span_shape, train.labels)
    return Scorer(lambda ev: _proba(m, ev.stats.span_shape), 0.5, {"features": ["span_tokens", "span_fraction", "span_start"]})


TRIVIAL_BASELINES = ("length", "span_shape")
"""Scores that know nothing about the model's internals: detection only holds if it beats them."""


def fit_threshold(score: np.ndarray, labels: np.ndarray) -> float:
    """Where a 1-D logistic regression on the training answers crosses p = 0.5 (``score > t`` → 1).

    Gives the training-free scores an accuracy comparable with the probes' 0.5 rule without looking
    at evaluation labels; a fit with a negative slope (score points the wrong way on training) makes
    every item above ``t`` count as faithful, which shows up honestly as accuracy below 50 %.
    """
    from sklearn.linear_model import LogisticRegression

    s = np.asarray(score, dtype=np.float64)
    mu, sd = s.mean(), s.std() or 1.0
    m = LogisticRegression(C=1e6, max_iter=1000).fit(((s - mu) / sd)[:, None], labels)
    w, b = float(m.coef_[0, 0]), float(m.intercept_[0])
    if w <= 0:
        return float("inf")
    return float(mu + sd * (-b / w))


def _one_dim(name: str, get: Callable[[TokenStats], np.ndarray]) -> Callable[[TrainData], Scorer]:
    def fit(train: TrainData) -> Scorer:
        st = _need_stats(train)
        thr = fit_threshold(get(st), train.labels)
        return Scorer(lambda ev: get(ev.stats), thr, {"threshold": thr, "training_free": name != "length"})

    return fit


BASELINES: dict[str, Baseline] = {b.name: b for b in (
    Baseline("h_neurons", "logistic regression refit on the k H-Neuron columns (paper Table 1 'H-Neurons')", _fit_h_neurons),
    Baseline("h_neurons_full_l1", "the sparse L1 probe as-is, all non-zero weights (official evaluation)", _fit_full_l1),
    Baseline("random", "the same refit on k random non-H neurons, mean over draws (paper Table 1 'Random')", _fit_random),
    Baseline("best_layer", "L1 probe on all neurons of the single best layer (held-out accuracy on training)", _fit_best_layer),
    Baseline("residual", "logistic regression on the residual stream averaged over answer tokens (middle layer)", _fit_residual),
    Baseline("logprob", "negative mean answer-token log-probability (training-free)", _one_dim("logprob", lambda s: -s.logprob)),
    Baseline("entropy", "mean predictive entropy over answer tokens (training-free)", _one_dim("entropy", lambda s: s.entropy)),
    Baseline("length", "response length in tokens alone (confound check; longer = hallucinated)", _one_dim("length", lambda s: s.length)),
    Baseline("span_shape", "logistic regression on the answer span's token count, share of the response and start "
             "offset (leak guard: high = the span rule separates the classes)", _fit_span_shape),
)}


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def _columns(s: np.ndarray) -> np.ndarray:
    return s[:, None] if s.ndim == 1 else s


def score_metrics(y: Sequence[int], scores: np.ndarray, threshold: float, n_boot: int, seed: int) -> dict[str, Any]:
    """Accuracy (``score > threshold``), AUROC and prevalence-threshold accuracy with 95% bootstrap CIs.

    ``scores`` ``[n, draws]`` (random baseline): each number is the mean over draws, its CI comes
    from resampling items with the mean over draws recomputed per replicate, and ``*_sd`` is the sd
    over draws. The prevalence threshold (PAPER.md §8.22) removes the 3-vs-1 calibration shift.
    """
    yy = np.asarray(y, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)

    def acc(yb: np.ndarray, sb: np.ndarray) -> float:
        return float(np.mean([stats.accuracy(yb, c > threshold) for c in _columns(sb).T]))

    def auc(yb: np.ndarray, sb: np.ndarray) -> float:
        return float(np.mean([stats.auroc(yb, c) for c in _columns(sb).T]))

    def prev(yb: np.ndarray, sb: np.ndarray) -> float:
        return float(np.mean([stats.balanced_threshold_accuracy(yb, c) for c in _columns(sb).T]))

    out: dict[str, Any] = {"n": int(yy.size), "threshold": threshold}
    for key, fn in (("accuracy", acc), ("auroc", auc), ("accuracy_prevalence", prev)):
        point, lo, hi = stats.bootstrap_ci(fn, yy, s, n_boot=n_boot, seed=seed)
        out[key], out[f"{key}_ci"] = point, [lo, hi]
    if s.ndim == 2:
        out["draws"] = int(s.shape[1])
        out["accuracy_sd"] = float(np.std([stats.accuracy(yy, c > threshold) for c in s.T], ddof=1)) if s.shape[1] > 1 else 0.0
        out["auroc_sd"] = float(np.std([stats.auroc(yy, c) for c in s.T], ddof=1)) if s.shape[1] > 1 else 0.0
    return out


def selective_answering(correct: Sequence[int], halluc_score: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """Accuracy of the answered items vs the fraction answered, abstaining on the highest
    hallucination scores first; area under that curve (higher = better) with a bootstrap CI.

    ``halluc_score`` ``[n, draws]`` (random baseline): the curve and CI use the mean score over
    draws; ``aurc_draws_mean``/``aurc_draws_sd`` give the per-draw areas.
    """
    c = np.asarray(correct, dtype=np.int64)
    s = np.asarray(halluc_score, dtype=np.float64)
    conf = -(s.mean(axis=1) if s.ndim == 2 else s)
    cov, acc = stats.risk_coverage(c, conf)
    point, lo, hi = stats.bootstrap_ci(lambda yb, sb: stats.aurc(yb, sb), c, conf, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {"coverage": cov.tolist(), "accuracy": acc.tolist(), "aurc": point, "aurc_ci": [lo, hi]}
    if s.ndim == 2:
        per = [stats.aurc(c, -col) for col in s.T]
        out["aurc_draws_mean"] = float(np.mean(per))
        out["aurc_draws_sd"] = float(np.std(per, ddof=1)) if len(per) > 1 else 0.0
    return out
