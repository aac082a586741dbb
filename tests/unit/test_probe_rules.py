"""C rules beside the paper's: CV with the one-standard-error rule, stability selection, the suppression gate."""

from __future__ import annotations

import numpy as np
import pytest

from hneurons.errors import ConfigError
from hneurons.probe.design import build_rows
from hneurons.probe.estimator import HNeuronProbe
from hneurons.probe.path import default_C_grid
from hneurons.probe.rules import count_interval, cv_one_se, stability_selection, suppression_gate

PLANTED = [5, 40, 77, 120]


def questions(n_q: int = 80, p: int = 150, seed: int = 0, effect: float = 1.5):
    """3-vs-1 rows of CETT-like features with PLANTED neurons higher in hallucinated answers."""
    rng = np.random.default_rng(seed)
    mu = rng.gamma(4.0, 0.013 / 4.0, size=p)
    mu[PLANTED] = 0.013
    sd = 0.005 * mu / 0.013 + 1e-4
    lab = np.zeros(n_q, dtype=np.int64)
    lab[: n_q // 2] = 1
    ans = rng.normal(size=(n_q, p)) * sd + mu
    oth = rng.normal(size=(n_q, p)) * sd + mu
    ans[np.ix_(lab == 1, PLANTED)] += effect * sd[PLANTED]
    X, y, g = build_rows(ans.astype(np.float32), oth.astype(np.float32), lab, "3-vs-1")
    return X, y, g


@pytest.fixture(scope="module")
def data():
    X, y, g = questions()
    return X, y, g, default_C_grid(X, y, n=5, span=100.0).tolist()


def test_suppression_gate():
    assert suppression_gate(None, 0, 10) == (False, "off: probe.suppression_questions = 0")
    on, why = suppression_gate(4 / 60, 60, 10)
    assert not on and "answers 4 of 60" in why and "0.017" in why
    on, why = suppression_gate(30 / 60, 60, 10)
    assert on and "30 of 60" in why


def test_cv_one_se_matches_a_row_subset_reference(data):
    """Zero-weight rows are the same as removed rows: rebuild each fold by slicing and compare."""
    X, y, g, Cs = data
    out = cv_one_se(X, y, g, Cs, folds=4, seed=1)
    n_q = int(g.max()) + 1
    # the same folds, recomputed from the function's own rule
    from hneurons.probe.rules import _question_folds

    fold = _question_folds(g, y[:n_q], 4, np.random.default_rng(1))[g]
    acc = np.zeros((4, len(Cs)))
    for f in range(4):
        train = np.flatnonzero(fold != f)
        test = np.flatnonzero(fold[:n_q] == f)
        for j, C in enumerate(Cs):
            m = HNeuronProbe(C=C, tol=1e-6).fit(X[train], y[train])
            acc[f, j] = (m.predict(X[test]) == y[test]).mean()
    np.testing.assert_allclose(out["cv_acc_mean"], acc.mean(axis=0), atol=1.5 / len(np.flatnonzero(fold[:n_q] == 0)))
    mean, se = np.array(out["cv_acc_mean"]), np.array(out["cv_acc_se"])
    best = int(np.argmax(mean))
    assert out["best_C"] == Cs[best]
    assert out["C"] == Cs[next(i for i in range(len(Cs)) if mean[i] >= mean[best] - se[best])]
    assert out["C"] <= out["best_C"]


def test_cv_folds_keep_questions_together_and_stratify(data):
    from hneurons.probe.rules import _question_folds

    _, y, g, _ = data
    n_q = int(g.max()) + 1
    fold = _question_folds(g, y[:n_q], 4, np.random.default_rng(0))
    for f in range(4):
        assert abs(int(y[:n_q][fold == f].sum()) - n_q // 8) <= 1  # each fold: a quarter of the hallucinated
    with pytest.raises(ConfigError, match="cv_folds=1"):
        cv_one_se(data[0], y, g, data[3], folds=1)


def test_cv_adds_suppression_only_when_given(data):
    X, y, g, Cs = data
    # a suppression term that heavily penalises every C but the smallest moves the choice there
    supp = {c: (1.0 if i == 0 else 0.0) for i, c in enumerate(Cs)}
    out = cv_one_se(X, y, g, Cs, folds=4, seed=1, suppression=supp)
    assert out["suppression_used"] and out["C"] == Cs[0]


def test_stability_selection_bound_and_choice(data):
    X, y, g, Cs = data
    out = stability_selection(X, y, g, Cs, subsamples=8, pi=0.6, ev_max=1.0, seed=0)
    p = X.shape[1]
    q = np.array(out["mean_selected"])
    np.testing.assert_allclose(out["expected_false_bound"], q**2 / ((2 * 0.6 - 1) * p))
    ok = [i for i, b in enumerate(out["expected_false_bound"]) if b <= 1.0]
    assert out["C"] == Cs[max(ok)]
    assert set(out["stable"]) <= set(range(p))
    assert all(f >= 0.6 for f in out["stable_frequency"])
    # the planted neurons (1.5 SD) are the stable ones at a C where the bound allows them
    assert len(set(out["stable"]) & set(PLANTED)) >= 3


def test_stability_on_noise_selects_few():
    X, y, g = questions(effect=0.0, seed=4)
    Cs = default_C_grid(X, y, n=5, span=100.0).tolist()
    out = stability_selection(X, y, g, Cs, subsamples=8, pi=0.75, ev_max=1.0, seed=0)
    assert len(out["stable"]) <= 3


def test_stability_rejects_bad_parameters(data):
    X, y, g, Cs = data
    with pytest.raises(ConfigError, match="stability_pi=0.5"):
        stability_selection(X, y, g, Cs, pi=0.5)
    with pytest.raises(ConfigError, match="stability_subsamples=1"):
        stability_selection(X, y, g, Cs, subsamples=1)


def test_count_interval():
    assert count_interval([7]) is None
    assert count_interval([10, 20]) == [10.25, 19.75]
    assert count_interval(list(range(101)), level=0.9) == pytest.approx([5.0, 95.0])
