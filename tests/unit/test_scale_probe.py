"""The probe at scale, on a small shape: float16 store → rows without copies, screening = unscreened,
torch path = NumPy path, planted neurons found, and bad stores refused with one line."""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from hneurons.core.store import FeatureStore, StoreShape
from hneurons.errors import DataError
from hneurons.probe.design import Design, build_rows, rows_from_stack
from hneurons.probe.estimator import HNeuronProbe, l1_logistic_objective, liblinear_l1
from hneurons.probe.path import default_C_grid, fit_path
from hneurons.rundir import file_sha256

_SPEC = importlib.util.spec_from_file_location("scale_bench", Path(__file__).resolve().parents[2] / "benchmarks" / "scale.py")
scale = importlib.util.module_from_spec(_SPEC)
sys.modules["scale_bench"] = scale
_SPEC.loader.exec_module(scale)

SHAPE = (4, 96)  # 384 neurons: small enough for liblinear as the unscreened reference
N_Q = 300


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("scale") / "train"
    labels = scale.write_store(path, SHAPE, N_Q, k=12, seed=3)
    return path, labels


@pytest.fixture(scope="module")
def rows(store):
    path, labels = store
    _, stack = FeatureStore(path).load_rows(["answer", "other"])
    X, y, groups = rows_from_stack(stack, labels, "3-vs-1")
    return X, y, groups, labels


def test_load_rows_is_the_stores_float16_and_matches_build_rows(store, rows):
    path, labels = store
    X, y, groups, _ = rows
    assert X.dtype == np.float16 and X.shape == (2 * N_Q, SHAPE[0] * SHAPE[1])
    _, feats = FeatureStore(path).load()
    X2, y2, g2 = build_rows(feats["answer"], feats["other"], labels, "3-vs-1")
    np.testing.assert_array_equal(X.astype(np.float32), X2)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(groups, g2)


def test_rows_from_stack_drops_all_nan_other_rows():
    stack = np.arange(24, dtype=np.float16).reshape(6, 4)
    stack[4] = np.nan  # question 1 has an empty "other" region
    X, y, g = rows_from_stack(stack, np.array([1, 0, 1]), "3-vs-1")
    np.testing.assert_array_equal(X, stack[[0, 1, 2, 3, 5]])
    np.testing.assert_array_equal(y, [1, 0, 1, 0, 0])
    np.testing.assert_array_equal(g, [0, 1, 2, 0, 2])
    X1, y1, _ = rows_from_stack(stack[:3], np.array([1, 0, 1]), "1-vs-1")
    assert X1.base is not None and y1.tolist() == [1, 0, 1]  # a view, not a copy


def test_float16_fit_equals_float32_fit(rows):
    X, y, _, _ = rows
    a = HNeuronProbe(C=30.0).fit(X, y)
    b = HNeuronProbe(C=30.0).fit(X.astype(np.float32), y)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-6, atol=1e-9)
    assert a.objective_ == pytest.approx(b.objective_, rel=1e-9)


def test_chunked_threaded_matvec_is_exact(rows, monkeypatch):
    X, _, _, _ = rows
    v = np.random.default_rng(0).normal(size=X.shape[0])
    ref = X.astype(np.float64).T @ v.astype(np.float32).astype(np.float64)
    monkeypatch.setattr("hneurons.probe.design.CHUNK_BYTES", 64 * X.shape[1] * 4)  # ten chunks, two workers
    np.testing.assert_allclose(Design(X).rmatvec(v), ref, rtol=1e-5, atol=1e-6)


def test_screened_path_equals_unscreened_solver(rows):
    """Working sets + strong rules, KKT-checked over every column: the objective of the unscreened
    reference (liblinear on all columns, run to tol=1e-8) within 1e-4 and the same support."""
    X, y, _, _ = rows
    Cs = default_C_grid(X, y, n=4, span=100.0)
    for pt in fit_path(X, y, Cs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = liblinear_l1(pt.C, tol=1e-8, max_iter=100000).fit(X.astype(np.float64), y)
        obj_ref = l1_logistic_objective(X, y, pt.C, ref.coef_[0], ref.intercept_[0])
        assert abs(pt.objective - obj_ref) / obj_ref <= 1e-4
        assert set(np.flatnonzero(pt.coef > 0)) == set(np.flatnonzero(ref.coef_[0] > 1e-6))


def test_torch_cpu_path_matches_numpy(rows):
    pytest.importorskip("torch")
    X, y, _, _ = rows
    Cs = default_C_grid(X, y, n=4, span=100.0)
    a = fit_path(X, y, Cs, backend="numpy")
    b = fit_path(X, y, Cs, backend="torch-cpu")
    for pa, pb in zip(a, b):
        assert set(np.flatnonzero(pa.coef)) == set(np.flatnonzero(pb.coef))
        assert abs(pa.objective - pb.objective) / pa.objective <= 1e-4


def test_planted_neurons_recovered(store, rows):
    """Every planted neuron of 1 SD is selected at the largest C of a default grid, and the probe's
    positive set holds at least as many planted neurons of 1 SD as the t-test ranking of equal size."""
    X, y, _, _ = rows
    planted, effect = scale.planted_set(X.shape[1], 12, seed=3)
    pt = fit_path(X, y, default_C_grid(X, y, n=6, span=300.0))[-1]
    pos = np.flatnonzero(pt.coef > 0)
    probe = scale.recall(pos, planted, effect)
    ttest = scale.recall(scale.welch_top(X, y, pos.size), planted, effect)
    assert probe["recall_1sd"] == 1.0
    assert probe["recall_1sd"] >= ttest["recall_1sd"]


# --------------------------------------------------------------------------- bad stores


def _tiny_store(path: Path, chunks: list[dict[str, np.ndarray]]) -> FeatureStore:
    parts = [([f"q{c}_{i}" for i in range(ch["answer"].shape[0])], ch) for c, ch in enumerate(chunks)]
    return FeatureStore(path).write(parts, StoreShape(2, 4, "fp"))


def test_chunk_with_other_width_or_dtype_is_named(tmp_path):
    good = {"answer": np.ones((3, 8), np.float16), "other": np.ones((3, 8), np.float16)}
    st = _tiny_store(tmp_path / "s", [good, good])
    bad = tmp_path / "s" / "chunk_00001.safetensors"
    for arrays, words in (({"answer": np.ones((3, 7), np.float16), "other": np.ones((3, 7), np.float16)}, "shape"),
                          ({"answer": np.ones((3, 8), np.float32), "other": np.ones((3, 8), np.float32)}, "float32")):
        save_file(arrays, str(bad), metadata={})
        idx = json.loads(st.index_path.read_text())
        idx["sha256"]["chunk_00001.safetensors"] = file_sha256(bad)
        st.index_path.write_text(json.dumps(idx))
        with pytest.raises(DataError, match=rf"chunk_00001.*{words}"):
            st.load_rows(["answer", "other"])


def test_non_finite_cell_is_named_by_chunk_question_and_column(tmp_path):
    a = np.ones((3, 8), np.float16)
    a[2, 5] = np.inf
    st = _tiny_store(tmp_path / "s", [{"answer": np.ones((3, 8), np.float16), "other": np.ones((3, 8), np.float16)},
                                      {"answer": a, "other": np.ones((3, 8), np.float16)}])
    with pytest.raises(DataError, match=r"chunk_00001.*row 2 \(question 'q1_2'\), column 5 \(layer 1, neuron 1\)"):
        st.load_rows(["answer", "other"])


def test_memmap_reused_and_short_file_refused(tmp_path):
    arrays = {"answer": np.arange(24, dtype=np.float16).reshape(3, 8), "other": np.zeros((3, 8), np.float16)}
    st = _tiny_store(tmp_path / "s", [arrays])
    _, m = st.load_rows(["answer", "other"], memmap=tmp_path / "map")
    assert isinstance(m, np.memmap) and m.shape == (6, 8)
    np.testing.assert_array_equal(m[:3], arrays["answer"])
    _, again = st.load_rows(["answer", "other"], memmap=tmp_path / "map")  # reused: complete for this index
    np.testing.assert_array_equal(again, m)
    data = tmp_path / "map" / "rows.bin"
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"rows.bin holds 86 bytes but .* says 6 x 8 float16 \(96 bytes\)"):
        st.load_rows(["answer", "other"], memmap=tmp_path / "map")


def _rss_file_kb() -> int:
    """File-backed resident memory of this process (mapped file pages), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


def _float16_memmap(tmp_path: Path, shape: tuple[int, int], seed: int) -> tuple[np.random.Generator, np.ndarray, np.memmap]:
    """A random float16 matrix (the in-memory reference) and the same bytes memory-mapped read-only from a file."""
    rng = np.random.default_rng(seed)
    dense = rng.random(shape, dtype=np.float32).astype(np.float16)
    path = tmp_path / "rows.bin"
    dense.tofile(path)
    return rng, dense, np.memmap(path, dtype=np.float16, mode="r", shape=shape)


def test_passes_over_a_memmap_give_its_pages_back(tmp_path):
    """A full pass leaves no mapped page counted in the fit's RSS, and the result is the in-memory one."""
    from hneurons.core.rows import release_pages

    rng, dense, X = _float16_memmap(tmp_path, (2048, 8192), seed=0)  # 32 MiB
    v = rng.standard_normal(dense.shape[0])
    before = _rss_file_kb()
    got = Design(X).rmatvec(v)
    assert _rss_file_kb() - before < 8 * 1024  # 32 MiB read, < 8 MiB still mapped
    np.testing.assert_allclose(got, Design(dense).rmatvec(v), rtol=1e-6, atol=1e-6)
    float(np.asarray(X, dtype=np.float32).sum())  # touch every page
    assert _rss_file_kb() - before > 24 * 1024
    release_pages(X)
    assert _rss_file_kb() - before < 1024
    release_pages(dense)  # an in-memory array: nothing to do


def test_gather_from_a_memmap_equals_fancy_indexing_and_keeps_no_pages(tmp_path):
    """Column gathers (the solver's working set, objectives, CV scores) read a memmap in row steps."""
    from hneurons.core import rows as rows_mod

    rng, dense, X = _float16_memmap(tmp_path, (1024, 16384), seed=1)  # 32 MiB
    cols = np.sort(rng.choice(dense.shape[1], 400, replace=False))  # one page per row and column
    picked = np.sort(rng.choice(dense.shape[0], 300, replace=False))
    before = _rss_file_kb()
    got = rows_mod.gather(X, cols)
    assert _rss_file_kb() - before < 8 * 1024
    np.testing.assert_array_equal(got, dense[:, cols].astype(np.float64))
    np.testing.assert_array_equal(rows_mod.gather(X, cols, picked), dense[picked][:, cols].astype(np.float64))
    np.testing.assert_array_equal(rows_mod.gather(dense, cols, picked), dense[picked][:, cols].astype(np.float64))
