"""HNeuronProbe: estimator contract, parity with scikit-learn's liblinear, rows, path, persistence."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from hneurons.errors import ConfigError, DataError, HNeuronsError, NotFittedError
from hneurons.probe.estimator import HNeuronProbe, build_rows, l1_logistic_objective, liblinear_l1
from hneurons.probe.path import PathPoint, default_C_grid, fit_path, select_C
from hneurons.probe.stability import selection_stability

PLANTED_UP = [3, 17, 42, 77, 150]  # higher mean in hallucinated answer rows
PLANTED_DOWN = [8, 99]  # lower mean in hallucinated answer rows


def cett_like(n_q: int = 50, p: int = 240, seed: int = 0, effect: float = 1.0):
    """3-vs-1 rows shaped like raw CETT: means ~0.013, sd ~0.005, a shared per-row factor."""
    rng = np.random.default_rng(seed)
    mu = rng.gamma(4.0, 0.013 / 4.0, size=p)
    mu[PLANTED_UP + PLANTED_DOWN] = 0.013  # typical scale: tiny-mean columns need huge weights under raw L1
    sd = 0.005 * mu / 0.013 + 1e-4
    n = 4 * n_q
    f = rng.normal(0.0, 0.15, size=n)
    X = rng.normal(size=(n, p)) * sd + mu * (1 + f[:, None])
    y = np.zeros(n, dtype=np.int64)
    y[:n_q] = 1
    X[:n_q, PLANTED_UP] += effect * sd[PLANTED_UP]
    X[:n_q, PLANTED_DOWN] -= effect * sd[PLANTED_DOWN]
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def data():
    return cett_like()


def _lib(X, y, C, tol):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return liblinear_l1(C, tol=tol, max_iter=100000).fit(X.astype(np.float64), y)


def test_fit_returns_self_and_attributes(data):
    X, y = data
    probe = HNeuronProbe(C=30.0)
    assert probe.fit(X, y) is probe
    assert probe.coef_.shape == (X.shape[1],)
    assert isinstance(probe.intercept_, float)
    assert probe.n_features_in_ == X.shape[1]
    assert list(probe.classes_) == [0, 1]
    assert probe.n_nonzero_ >= probe.n_positive_ > 0
    assert probe.ratio_per_mille_ == pytest.approx(probe.n_positive_ / X.shape[1] * 1000)
    proba = probe.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(probe.predict(X), (proba[:, 1] > 0.5).astype(int))
    assert 0.5 < probe.score(X, y) <= 1.0


def test_not_fitted_error_is_ours_and_sklearns():
    from sklearn.exceptions import NotFittedError as SkNotFitted

    probe = HNeuronProbe()
    for call in (lambda: probe.predict(np.zeros((2, 3))), lambda: probe.h_neurons_, lambda: probe.save("x")):
        with pytest.raises(NotFittedError) as info:
            call()
        assert isinstance(info.value, SkNotFitted) and isinstance(info.value, HNeuronsError)


@pytest.mark.parametrize("C", [10.0, 30.0, 100.0])
def test_agrees_with_liblinear(data, C):
    X, y = data
    ours = HNeuronProbe(C=C).fit(X, y)
    ref_tight = _lib(X, y, C, tol=1e-8)
    obj_ref = l1_logistic_objective(X, y, C, ref_tight.coef_[0], ref_tight.intercept_[0])
    obj_ours = l1_logistic_objective(X, y, C, ours.coef_, ours.intercept_)
    assert ours.objective_ == pytest.approx(obj_ours, rel=1e-9)
    assert abs(obj_ours - obj_ref) / obj_ref < 1e-4
    a = set(np.flatnonzero(ours.coef_ > 0))
    b = set(np.flatnonzero(ref_tight.coef_[0] > 0))
    assert len(a & b) / len(a | b) >= 0.95
    # Never worse than the official call (liblinear at its default tol=1e-4).
    ref_default = _lib(X, y, C, tol=1e-4)
    assert obj_ours <= l1_logistic_objective(X, y, C, ref_default.coef_[0], ref_default.intercept_[0]) * (1 + 1e-6)
    assert ours.converged_


def test_planted_neurons_found_and_h_neurons_mapping(data):
    X, y = data
    probe = HNeuronProbe(C=30.0, d_ff=60).fit(X, y)
    pos = set(np.flatnonzero(probe.coef_ > 0))
    assert set(PLANTED_UP) <= pos
    assert not set(PLANTED_DOWN) & pos
    assert probe.coef_[PLANTED_DOWN].max() < 0
    hn = probe.h_neurons_
    assert len(hn) == probe.n_positive_
    weights = [w for _, _, w in hn]
    assert weights == sorted(weights, reverse=True) and min(weights) > 0
    for layer, neuron, w in hn:
        assert probe.coef_[layer * 60 + neuron] == w
    assert (42 // 60, 42 % 60) in {(l, n) for l, n, _ in hn}
    flat = HNeuronProbe(C=30.0).fit(X, y).h_neurons_
    assert all(layer == 0 for layer, _, _ in flat)


def test_float16_and_memmap_inputs(data, tmp_path):
    X, y = data
    ref = HNeuronProbe(C=30.0).fit(X, y)
    mm = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float16, shape=X.shape)
    mm[:] = X
    mm.flush()
    ro = np.load(tmp_path / "X.npy", mmap_mode="r")
    half = HNeuronProbe(C=30.0).fit(ro, y)
    assert set(np.flatnonzero(half.coef_ > 0)) >= set(PLANTED_UP)
    assert abs(half.objective_ - ref.objective_) / ref.objective_ < 1e-3


def test_build_rows_3_vs_1_hand_example():
    answer = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], dtype=np.float32)
    other = np.array([[10.0, 10.0], [np.nan, np.nan], [30.0, 30.0]], dtype=np.float32)
    labels = np.array([1, 0, 1])
    X, y, groups = build_rows(answer, other, labels, "3-vs-1")
    np.testing.assert_array_equal(X[:, 0], [1, 2, 3, 10, 30])
    np.testing.assert_array_equal(y, [1, 0, 1, 0, 0])  # other rows are always faithful
    np.testing.assert_array_equal(groups, [0, 1, 2, 0, 2])
    assert build_rows.last_dropped == 1
    X1, y1, g1 = build_rows(answer, other, labels, "1-vs-1")
    np.testing.assert_array_equal(X1[:, 0], [1, 2, 3])
    np.testing.assert_array_equal(y1, [1, 0, 1])
    with pytest.raises(ConfigError):
        build_rows(answer, other, labels, "2-vs-2")
    with pytest.raises(DataError):
        build_rows(answer, other[:2], labels, "3-vs-1")


def test_path_warm_start_matches_cold_and_sparsity_grows(data):
    X, y = data
    grid = default_C_grid(X, y, n=8, span=300.0)
    assert grid[0] == pytest.approx(1.0 / np.abs(X.T.astype(np.float64) @ (y - y.mean())).max(), rel=1e-4)
    pts = fit_path(X, y, grid[::-1])  # any order in, ascending out
    assert [p.C for p in pts] == sorted(grid)
    assert all(isinstance(p, PathPoint) for p in pts)
    nnz = [p.n_nonzero for p in pts]
    assert nnz[0] <= 2 and nnz[-1] > 10
    assert all(b >= a - 3 for a, b in zip(nnz, nnz[1:]))  # monotone-ish
    for p in (pts[3], pts[-1]):
        cold = HNeuronProbe(C=p.C).fit(X, y)
        assert abs(p.objective - cold.objective_) / cold.objective_ < 1e-4
    assert pts[-1].to_json()["n_positive"] == pts[-1].n_positive


def test_select_c_paper_rule():
    pts = [PathPoint(c, np.zeros(3), 0.0, 0, 0, 0.5, 1.0, 0.0) for c in (0.1, 1.0, 10.0)]
    assert select_C(pts, {0.1: 0.6, 1.0: 0.75, 10.0: 0.8}) == 10.0
    assert select_C(pts, {0.1: 0.6, 1.0: 0.75, 10.0: 0.8}, {0.1: 0.7, 1.0: 0.7, 10.0: 0.5}) == 1.0
    assert select_C(pts, {0.1: 0.7, 1.0: 0.7, 10.0: 0.7}) == 0.1  # ties -> sparser
    with pytest.raises(DataError, match="C=10"):
        select_C(pts, {0.1: 0.6, 1.0: 0.75})


def test_save_load_round_trip(data, tmp_path):
    X, y = data
    for standardize in (False, True):
        probe = HNeuronProbe(C=30.0, d_ff=60, standardize=standardize).fit(X, y)
        path = probe.save(tmp_path / f"probe_{standardize}.safetensors")
        back = HNeuronProbe.load(path)
        np.testing.assert_array_equal(back.decision_function(X), probe.decision_function(X))
        np.testing.assert_array_equal(back.predict(X), probe.predict(X))
        assert back.get_params() == probe.get_params()
        assert back.h_neurons_ == probe.h_neurons_
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError):
        HNeuronProbe.load(tmp_path / "junk.safetensors")
    with pytest.raises(DataError, match="does not exist"):
        HNeuronProbe.load(tmp_path / "missing.safetensors")


def test_standardize_matches_explicit_scaling(data):
    X, y = data
    Xd = X.astype(np.float64)
    Z = (Xd - Xd.mean(0)) / Xd.std(0)
    a = HNeuronProbe(C=0.05, standardize=True).fit(X, y)
    b = HNeuronProbe(C=0.05).fit(Z.astype(np.float32), y)
    assert set(np.flatnonzero(a.coef_)) == set(np.flatnonzero(b.coef_))
    np.testing.assert_allclose(a.decision_function(X), b.decision_function(Z.astype(np.float32)), atol=1e-3)


def test_bad_inputs_raise_hneurons_errors(data):
    X, y = data
    Xn = X.copy()
    Xn[5, 7] = np.nan
    with pytest.raises(DataError, match="row 5, column 7"):
        HNeuronProbe().fit(Xn, y)
    Xi = X.copy()
    Xi[9, 2] = np.inf
    with pytest.raises(DataError, match="row 9, column 2"):
        HNeuronProbe().fit(Xi, y)
    with pytest.raises(DataError, match="two classes"):
        HNeuronProbe().fit(X, np.zeros(len(y)))
    with pytest.raises(DataError, match="too small"):
        HNeuronProbe().fit(X[:3], np.array([0, 1, 1]))
    with pytest.raises(DataError, match="aligned"):
        HNeuronProbe().fit(X, y[:-1])
    probe = HNeuronProbe(C=30.0).fit(X, y)
    with pytest.raises(DataError, match=f"{X.shape[1] - 1} features but the probe expects {X.shape[1]}"):
        probe.predict(X[:, :-1])
    with pytest.raises(ConfigError):
        HNeuronProbe(C=-1.0).fit(X, y)
    with pytest.raises(ConfigError):
        HNeuronProbe(mode="2-vs-2").fit(X, y)
    with pytest.raises(ConfigError, match="d_ff"):
        HNeuronProbe(d_ff=7).fit(X, y)


def test_liblinear_solver_option(data):
    X, y = data
    a = HNeuronProbe(C=3.0, solver="liblinear").fit(X, y)
    b = HNeuronProbe(C=3.0).fit(X, y)
    assert b.objective_ <= a.objective_ * (1 + 1e-6)


def test_selection_stability(data):
    X, y = data
    out = selection_stability(X, y, C=30.0, n_resamples=4, seed=0, groups=np.r_[np.arange(50), np.arange(50),
                                                                                  np.arange(50, 150)])
    assert 0.0 <= out["mean_jaccard"] <= 1.0
    assert len(out["n_positive"]) == 4
    assert all(0 < v <= 1 for v in out["selection_frequency"].values())
    # The strongly planted neurons survive most resamples.
    assert sum(out["full_fit_frequency"].get(f, 0.0) for f in PLANTED_UP) / len(PLANTED_UP) >= 0.75
    with pytest.raises(ConfigError):
        selection_stability(X, y, C=30.0, n_resamples=1)
