"""Checked artefacts: a damaged feature chunk or stage file is named, never used or called up to date.

Each feature chunk's sha256 is kept in its store's index and every stage's files are hashed into
its done-marker; these tests damage them the two ways a tester did (garbage bytes; finite garbage
inside a valid safetensors file, which reads fine) and check the one-line errors, the rebuild, and
that ``--force`` keeps the done-marker until its replacement is written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import bpe_tokenizer, tiny_llama  # noqa: E402

from hneurons.core.arch import resolve  # noqa: E402
from hneurons.config import load_config  # noqa: E402
from hneurons.errors import StageError  # noqa: E402
from hneurons.core.features import ExtractOptions, FeatureItem  # noqa: E402
from hneurons.core.store import FeatureStore  # noqa: E402
from hneurons.rundir import DONE_FILE, RunDir, file_fingerprint, write_json  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    model = tiny_llama(bpe_tokenizer())
    items = [FeatureItem(f"q{i}", tuple(range(3, 10 + i)), answer=(4, 6), response=(3, 7 + i)) for i in range(5)]
    return model, resolve(model), items


def _extract(store_path: Path, tiny) -> FeatureStore:
    model, layout, items = tiny
    return FeatureStore(store_path).extract(model, layout, items, model_fingerprint="fp", dtype="float32",
                                            chunk_size=2, options=ExtractOptions(progress=False))


def _finite_garbage(path: Path) -> None:
    """Overwrite the last 16 data bytes with finite floats: the file still parses as safetensors."""
    data = bytearray(path.read_bytes())
    data[-16:] = np.full(4, 123.0, dtype=np.float32).tobytes()
    path.write_bytes(bytes(data))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_damaged_chunk_is_named_and_re_extracted(tmp_path: Path, tiny) -> None:
    store_path = tmp_path / "run" / "features" / "train"
    store = _extract(store_path, tiny)
    qids, clean = store.load()
    chunk = store_path / "chunk_00001.safetensors"
    first = store_path / "chunk_00000.safetensors"
    mtime = first.stat().st_mtime_ns

    _finite_garbage(chunk)  # reads fine, would change the features silently
    with pytest.raises(StageError) as exc:
        store.load()
    msg = _one_line(exc)
    assert str(chunk) in msg and "sha256" in msg and f"hneurons features {tmp_path / 'run'} --force" in msg

    chunk.write_bytes(b"\x00garbage" * 50)  # not safetensors at all
    with pytest.raises(StageError, match="chunk_00001.safetensors does not match"):
        store.load()

    _extract(store_path, tiny)  # the damaged chunk is extracted again, the intact one reused
    assert first.stat().st_mtime_ns == mtime
    qids2, again = FeatureStore(store_path).load()
    assert qids2 == qids
    np.testing.assert_array_equal(again["answer"], clean["answer"])

    (store_path / "index.json").write_text("{ torn")
    with pytest.raises(StageError, match="index.json line 1: not valid JSON"):
        FeatureStore(store_path).load()
    detect_store = tmp_path / "run" / "features" / "detect_nq_open"
    _extract(detect_store, tiny)
    _finite_garbage(detect_store / "chunk_00002.safetensors")
    with pytest.raises(StageError, match=r"rebuild it with `hneurons detect .* --force`"):
        FeatureStore(detect_store).load()


def test_interrupted_extraction_keeps_hashes_of_written_chunks(tmp_path: Path, tiny) -> None:
    model, layout, items = tiny
    store_path = tmp_path / "train"
    store = FeatureStore(store_path)
    calls = []
    real = FeatureStore.extract.__globals__["extract_cett"]

    def dying(*a, **k):
        if len(calls) == 1:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **k)

    FeatureStore.extract.__globals__["extract_cett"] = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            _extract(store_path, tiny)
    finally:
        FeatureStore.extract.__globals__["extract_cett"] = real
    idx = json.loads((store_path / "index.json").read_text())
    assert idx["complete"] is False and list(idx["sha256"]) == ["chunk_00000.safetensors"]
    assert not store.exists()
    with pytest.raises(StageError, match="interrupted"):
        store.load()
    mtime = (store_path / "chunk_00000.safetensors").stat().st_mtime_ns
    _extract(store_path, tiny)
    assert (store_path / "chunk_00000.safetensors").stat().st_mtime_ns == mtime and store.exists()


# ----------------------------------------------------------------------------- pipeline


def _stages(tiny, probe_runs: list[str]) -> dict[str, ModuleType]:
    """A features stage writing a real store and a probe stage reading it (no model needed)."""
    from hneurons.stages import features as real_features

    feats = ModuleType("features")
    feats.inputs = lambda ctx: {"v": 1}
    feats.run = lambda ctx: (_extract(ctx.rundir.root / "features" / "train", tiny), {"n": 5})[1]
    feats.outputs = real_features.outputs

    probe = ModuleType("probe")
    probe.inputs = lambda ctx: {"index": file_fingerprint(ctx.rundir.root / "features" / "train" / "index.json")}

    def probe_run(ctx):
        _, f = FeatureStore(ctx.rundir.root / "features" / "train").load()
        if probe_runs and probe_runs[-1] == "die":
            raise KeyboardInterrupt
        probe_runs.append("ran")
        write_json(ctx.rundir.path("probe", "h_neurons.json"), {"mean": float(f["answer"].mean())})
        return {"C": 1.0}

    probe.run = probe_run
    return {"features": feats, "probe": probe}


def test_pipeline_up_to_date_only_when_hashes_match(tmp_path: Path, tiny, monkeypatch) -> None:
    import hneurons.pipeline as pipeline

    runs: list[str] = []
    fakes = _stages(tiny, runs)
    monkeypatch.setattr(pipeline, "stage_module", lambda name: fakes[name])
    rd = RunDir(tmp_path / "run")
    logs: list[str] = []
    ctx = SimpleNamespace(cfg=load_config("smoke"), rundir=rd, log=logs.append)
    for name in ("features", "probe", "features", "probe"):
        pipeline.run_stage(ctx, name)
    assert logs.count("[features] up to date, skipped (use --force to re-run)") == 1
    assert logs.count("[probe] up to date, skipped (use --force to re-run)") == 1 and runs == ["ran"]
    marker = json.loads((rd.root / "features" / DONE_FILE).read_text())
    assert "features/train/chunk_00002.safetensors" in marker["outputs"]

    chunk = rd.root / "features" / "train" / "chunk_00001.safetensors"
    _finite_garbage(chunk)
    probe_marker = (rd.root / "probe" / DONE_FILE).read_bytes()
    with pytest.raises(StageError) as exc:  # probe --force over a damaged chunk: one line, marker kept
        pipeline.run_stage(ctx, "probe", force=True)
    msg = _one_line(exc)
    assert str(chunk) in msg and f"`hneurons features {rd.root} --force`" in msg
    assert (rd.root / "probe" / DONE_FILE).read_bytes() == probe_marker and runs == ["ran"]

    result = (rd.root / "probe" / "h_neurons.json").read_text()
    logs.clear()
    pipeline.run_stage(ctx, "features")  # not "up to date": the damaged chunk is rebuilt
    assert "[features] running" in logs
    pipeline.run_stage(ctx, "probe")  # (re-runs when the rebuilt chunk's header order differs)
    assert (rd.root / "probe" / "h_neurons.json").read_text() == result  # the same features again

    (rd.root / "probe" / "h_neurons.json").write_text('{"mean": 0}')  # a stage's own file changed
    logs.clear()
    n = len(runs)
    pipeline.run_stage(ctx, "probe")
    assert "[probe] running" in logs and len(runs) == n + 1

    runs.append("die")  # --force interrupted mid-stage: the old marker is still there, still valid
    before = (rd.root / "probe" / DONE_FILE).read_bytes()
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_stage(ctx, "probe", force=True)
    assert (rd.root / "probe" / DONE_FILE).read_bytes() == before
    runs.pop()
    logs.clear()
    pipeline.run_stage(ctx, "probe")
    assert "[probe] up to date, skipped (use --force to re-run)" in logs


def test_cli_probe_force_on_damaged_chunk_is_one_line(tmp_path: Path, tiny, monkeypatch, capsys) -> None:
    import hneurons.cli.main as cli
    import hneurons.pipeline as pipeline

    runs: list[str] = []
    fakes = _stages(tiny, runs)
    monkeypatch.setattr(pipeline, "stage_module", lambda name: fakes[name])
    rd = RunDir(tmp_path / "run")
    cfg = load_config("smoke", overrides={"model.prompt_format": "plain"})
    rd.init_manifest(cfg.to_dict(), None, cfg.seed)
    ctx = SimpleNamespace(cfg=cfg, rundir=rd, log=lambda m: None)
    pipeline.run_stage(ctx, "features")
    pipeline.run_stage(ctx, "probe")
    _finite_garbage(rd.root / "features" / "train" / "chunk_00000.safetensors")
    monkeypatch.setattr(sys, "argv", ["hneurons", "probe", str(rd.root), "--force"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and "chunk_00000.safetensors" in err[0], err
    assert (rd.root / "probe" / DONE_FILE).is_file()
