"""Run directory (atomic writes, resume logs, skip-if-unchanged, manifest) and config (presets, overrides)."""

from __future__ import annotations

import json

import pytest

from hneurons.config import PRESETS, load_config
from hneurons.errors import ConfigError, StageError
from hneurons.rundir import RunDir, append_jsonl, atomic_path, read_json, read_jsonl, write_json


def test_atomic_write_leaves_old_file_on_error(tmp_path) -> None:
    target = tmp_path / "a.json"
    write_json(target, {"x": 1, "nan": float("nan")})
    assert json.loads(target.read_text()) == {"x": 1, "nan": None}
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text())["x"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind


def test_jsonl_resume_log_drops_only_a_torn_last_line(tmp_path) -> None:
    log = tmp_path / "log.jsonl"
    append_jsonl(log, [{"i": 0}, {"i": 1}])
    with log.open("a") as fh:
        fh.write('{"i": 2, "te')  # an interrupted append
    assert [r["i"] for r in read_jsonl(log)] == [0, 1]
    log.write_text('{"i": 0}\nnot json\n{"i": 2}\n')
    with pytest.raises(StageError, match="line 2"):
        read_jsonl(log)
    with pytest.raises(StageError, match="missing"):
        read_json(tmp_path / "nope.json")


def test_stage_skip_and_manifest(tmp_path) -> None:
    rd = RunDir(tmp_path / "run")
    rd.init_manifest({"a": 1}, {"fingerprint": "abc"}, seed=3)
    assert not rd.is_done("probe", "fp1")
    rd.mark_done("probe", "fp1", 1.5, {"C": 2.0})
    assert rd.is_done("probe", "fp1") and not rd.is_done("probe", "fp2")
    rd.init_manifest({"a": 1}, None, seed=3)  # a resumed run that has not loaded the model yet
    m = rd.manifest()
    assert m["model"] == {"fingerprint": "abc"} and m["stages"]["probe"]["C"] == 2.0
    (rd.path("probe", "h_neurons.json")).write_text("{}")  # a file the marker did not record is ignored
    assert rd.is_done("probe", "fp1")
    rd.mark_done("probe", "fp1", 1.5, {"C": 2.0})
    (rd.path("probe", "h_neurons.json")).write_text("{ }")  # a recorded file changed: not up to date
    assert not rd.is_done("probe", "fp1")
    with pytest.raises(StageError, match=r"h_neurons.json does not match the sha256.*hneurons probe .* --force"):
        rd.verify("probe")
    rd.mark_skipped("origin", "no base model")
    assert rd.manifest()["stages"]["origin"] == {"status": "not run", "reason": "no base model"}
    with pytest.raises(StageError, match="unknown stage"):
        rd.stage_dir("nope")


def test_presets_and_overrides(tmp_path) -> None:
    paper = load_config("paper")
    assert (paper.responses.k, paper.responses.temperature, paper.responses.n_questions) == (10, 1.0, 10_000)
    assert paper.responses.per_class == 1000 and paper.probe.mode == "3-vs-1" and not paper.responses.screen
    assert set(PRESETS) == {"paper", "default", "smoke"}
    toml = tmp_path / "c.toml"
    toml.write_text('seed = 7\n[responses]\nk = 4\n[intervene]\nalphas = [0.0, 2.0]\n')
    cfg = load_config("default", file=toml, overrides=["responses.k=6", "model.name=none"])
    assert (cfg.seed, cfg.responses.k, cfg.intervene.alphas, cfg.model.name) == (7, 6, [0.0, 2.0], None)
    for bad, words in [(["responses.k=0"], "responses.k"), (["probe.mode=2-vs-1"], "probe.mode"),
                       (["responses.k=abc"], "not a valid int"), (["nosection.k=1"], "unknown config section"),
                       (["features.other_scope=all"], "other_scope"),
                       (["detect.nonexist_questions=0"], "detect.nonexist_questions")]:
        with pytest.raises(ConfigError, match=words):
            load_config("default", overrides=bad)


def test_atomic_writes_get_the_ordinary_file_mode(tmp_path):
    """mkstemp makes 0600 files; a run's files get 0666 less the umask (0644 by default), as open() would."""
    import os

    from hneurons.data.registry import Record, save_records
    from hneurons.rundir import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        save_records([Record(id="1", question="Q?")], tmp_path / "r.jsonl.gz")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "r.jsonl.gz").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        write_json(tmp_path / "b.json", {"x": 1})
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
