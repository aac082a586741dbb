"""``hneurons config show`` / ``describe()``, ``hneurons --version``: every key, its default and the resolved value."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from hneurons.config import PRESETS, Config, describe, load_config
from hneurons.config_keys import recorded_config
from hneurons.errors import ConfigError


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "COLUMNS": "200",
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "hneurons.cli.main", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def _run_dir(tmp_path, **changes):
    cfg = load_config("smoke")
    d = cfg.to_dict()
    for key, value in changes.items():
        section, name = key.split(".")
        d[section][name] = value
    root = tmp_path / "run"
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"config": d, "stages": {}}))
    return root


def test_describe_lists_every_leaf_key_with_default_and_value() -> None:
    rows = describe(load_config("smoke"))
    top = [f for f in dataclasses.fields(Config) if f.default_factory is dataclasses.MISSING]  # seed, budget_minutes
    n_leaves = len(top) + sum(len(dataclasses.fields(f.default_factory())) for f in dataclasses.fields(Config)
                              if f not in top)
    assert len(rows) == n_leaves == len({r.key for r in rows})
    by_key = {r.key: r for r in rows}
    k = by_key["responses.k"]
    assert (k.type, k.default, k.value, k.changed) == ("int", 10, 2, True)
    assert by_key["intervene.max_new_tokens"].type == "int | None"
    assert by_key["detect.sets"].value == ["smoke", "nonexist"]
    assert by_key["model.name"].caller_only and not by_key["seed"].caller_only
    # exactly the preset's keys differ from the defaults (the paper preset is the defaults)
    assert {r.key for r in rows if r.changed} == set(PRESETS["smoke"])
    assert not any(r.changed for r in describe(load_config("paper")))


def test_every_key_has_a_one_line_description() -> None:
    rows = describe(Config())
    assert len(rows) > 80
    for r in rows:
        assert r.description.strip() and "\n" not in r.description and len(r.description) < 160, r.key


@pytest.mark.parametrize("override, words", [
    ("responses.backend=tgi", "responses.backend must be one of hf, vllm, openai, got 'tgi' (sampling engine)"),
    ("probe.c_rule=best", "probe.c_rule must be one of paper, cv1se, stability, got 'best'"),
    ("spans.method=regex", "spans.method must be one of phrase, response, llm, alias, got 'regex'"),
    ("responses.heldout_fraction=1", "responses.heldout_fraction must be ≥ 0 and < 1, got 1.0"),
    ("detect.nonexist_questions=0", "detect.nonexist_questions must be ≥ 1 (or none), got 0"),
    ("responses.min_agree=1", "responses.min_agree must be in (2, 5] for k=5, got 1"),
])
def test_a_bad_value_is_one_line_naming_key_value_and_what_is_allowed(override: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("default", overrides=[override])
    assert words in str(err.value) and "\n" not in str(err.value)
    assert err.value.__context__ is None or err.value.__suppress_context__  # no pydantic traceback behind it


def test_check_keys_names_the_key_of_a_value_set_after_loading() -> None:
    from hneurons.config_keys import check_keys

    cfg = load_config("paper")
    cfg.probe.Cs = [0.1, "x"]  # a list element: pydantic reports (probe, Cs, 1)
    with pytest.raises(ConfigError, match=r"^probe\.Cs must be a list\[float\] \(or none\), got 'x' \(the C path"):
        check_keys(cfg)
    cfg = load_config("paper")
    cfg.seed = "s"
    with pytest.raises(ConfigError, match=r"^seed must be an int, got 's' \(seed of every random choice"):
        check_keys(cfg)


def test_a_bad_choice_on_the_command_line_is_one_line() -> None:
    out = cli("config", "show", "--set", "model.prompt_format=html")
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "model.prompt_format must be one of chat, plain, got 'html'" in lines[0]


def test_set_strings_and_toml_values_keep_their_meaning(tmp_path) -> None:
    cfg = load_config("paper", overrides=["intervene.alphas=0,1,2", "detect.nonexist_questions=none",
                                          "responses.screen=1", "probe.standardize=false", "probe.Cs=[0.1, 1]"])
    assert cfg.intervene.alphas == [0.0, 1.0, 2.0] and cfg.detect.nonexist_questions is None
    assert cfg.responses.screen is True and cfg.probe.standardize is False and cfg.probe.Cs == [0.1, 1.0]
    toml = tmp_path / "c.toml"
    toml.write_text('seed = 3\n[responses]\nbackend = "vllm"\nk = 4\n[intervene]\nalphas = [0, 2]\n')
    cfg = load_config("paper", file=toml)
    assert (cfg.seed, cfg.responses.backend, cfg.responses.k, cfg.intervene.alphas) == (3, "vllm", 4, [0.0, 2.0])
    toml.write_text('[features]\nstore_dtype = "float64"\n')
    with pytest.raises(ConfigError, match=rf"^config file {re.escape(str(toml))}: features.store_dtype must be one of"):
        load_config("paper", file=toml)


def test_recorded_config_is_read_as_data_without_caller_only_keys(tmp_path) -> None:
    root = _run_dir(tmp_path, **{"model.name": "/evil/model", "responses.judge_url": "http://evil", "responses.k": 3})
    notes: list[str] = []
    cfg = recorded_config(root, {"probe.n_Cs": "5"}, note=notes.append)
    assert (cfg.responses.k, cfg.probe.n_Cs, cfg.responses.dataset) == (3, 5, "smoke_qa")
    assert cfg.model.name is None and cfg.responses.judge_url is None
    assert len(notes) == 1 and "model.name" in notes[0] and "responses.judge_url" in notes[0]


def test_config_show_json_and_text() -> None:
    out = cli("config", "show", "--preset", "smoke", "--set", "responses.k=3", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["key"]: r for r in json.loads(out.stdout)}
    assert rows["responses.k"] == {"key": "responses.k", "type": "int", "default": 10, "value": 3,
                                   "caller_only": False, "description": "samples per question", "changed": True}
    assert rows["responses.backend"]["type"] == "[hf|vllm|openai]"
    assert rows["responses.dataset"]["value"] == "smoke_qa" and rows["seed"]["changed"] is False
    text = cli("config", "show", "--changed")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("# preset default")
    assert any(ln.split()[:5] == ["responses.n_questions", "int", "10000", "*", "4500"]
               and ln.endswith("# first N questions of the pool, as the official code") for ln in lines)
    assert not any(ln.startswith("seed ") for ln in lines)  # unchanged keys left out with --changed


def test_config_show_run_dir(tmp_path) -> None:
    root = _run_dir(tmp_path, **{"model.name": "/evil/model", "responses.k": 3})
    out = cli("config", "show", str(root), "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["key"]: r for r in json.loads(out.stdout)}
    assert rows["responses.k"]["value"] == 3 and rows["model.name"]["value"] is None
    assert "ignored model.name" in out.stderr


def test_config_show_errors_are_one_line(tmp_path) -> None:
    root = _run_dir(tmp_path)
    for args, words in [((str(root), "--preset", "smoke"), "has its own config"),
                        ((str(tmp_path / "nope"),), "not a run directory"),
                        (("--preset", "huge"), "choose one of"),
                        (("--set", "responses.kk=1"), "unknown config key")]:
        out = cli("config", "show", *args)
        lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
        assert out.returncode == 2 and len(lines) == 1 and words in lines[0], (args, out.stderr)


def test_version() -> None:
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"hneurons {version('hneurons')}"


def test_run_takes_a_run_directory_and_refuses_a_disagreeing_name(tmp_path) -> None:
    from hneurons.cli.main import _run_dir

    assert _run_dir(None, None, None, None) == Path("runs/default")
    assert _run_dir(None, tmp_path, "x", "smoke") == tmp_path / "x"
    assert _run_dir(tmp_path / "x", None, None, "smoke") == tmp_path / "x"
    assert _run_dir(tmp_path / "x", tmp_path, "x", None) == tmp_path / "x"  # both ways, same folder
    out = cli("run", str(tmp_path / "x"), "--runs", str(tmp_path), "--name", "y")
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode == 2 and len(lines) == 1 and "disagrees with --runs/--name" in lines[0], out.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_run_resumes_the_positional_directory_with_its_own_config(tmp_path) -> None:
    # the recorded config wins over the preset exactly as for --runs/--name: a bad recorded value is reported
    root = _run_dir(tmp_path, **{"responses.k": 0})
    out = cli("run", str(root), "--offline")
    assert out.returncode == 2 and "responses.k must be ≥ 1" in out.stderr, out.stderr


def test_help_shows_preset_choices_and_no_metavar_on_flags() -> None:
    out = cli("run", "--help")
    assert out.returncode == 0 and "[smoke|default|paper]" in out.stdout and "[RUN_DIR]" in out.stdout
    force = next(ln for ln in out.stdout.splitlines() if "--force" in ln)
    assert "<bool>" not in force


def test_run_log_levels_and_run_log_file(tmp_path, monkeypatch) -> None:
    import logging

    from typer.testing import CliRunner

    import hneurons.pipeline
    from hneurons.cli.main import app

    def fake_run_all(cfg, run_dir, stages=None, force=False, log=print):
        log(f"[responses] k={cfg.responses.k}")
        logging.getLogger("hneurons.test").debug("a detail")
        return Path(run_dir) / "report.html"

    monkeypatch.setattr(hneurons.pipeline, "run_all", fake_run_all)
    root = tmp_path / "r"
    runner = CliRunner()
    loud = runner.invoke(app, ["run", str(root), "--preset", "smoke", "--verbose"])
    assert loud.exit_code == 0, loud.output
    assert "[responses] k=2" in loud.stderr and "a detail" in loud.stderr
    quiet = runner.invoke(app, ["run", str(root), "--preset", "smoke", "-q"])
    assert quiet.exit_code == 0 and "[responses]" not in quiet.stderr
    lines = (root / "run.log").read_text().splitlines()
    # both runs appended, every level kept, with timestamps
    assert [ln.split(" ", 2)[1:] for ln in lines] == [["INFO", "[responses] k=2"], ["DEBUG", "a detail"]] * 2
    both = runner.invoke(app, ["run", str(root), "-q", "-v"])
    assert both.exit_code != 0 and "contradict" in str(both.exception)


def test_stage_commands_append_to_the_same_run_log(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import hneurons.pipeline
    from hneurons.cli.main import app

    monkeypatch.setattr(hneurons.pipeline, "resolve_prompt_format", lambda cfg, log: None)
    monkeypatch.setattr(hneurons.pipeline, "run_stage", lambda ctx, stage, force=False: ctx.log(f"[{stage}] ran"))
    root = tmp_path / "r"
    out = CliRunner().invoke(app, ["probe", str(root), "--preset", "smoke"])
    assert out.exit_code == 0, out.output
    assert (root / "manifest.json").is_file()
    assert (root / "run.log").read_text().splitlines()[-1].endswith("INFO [probe] ran")
