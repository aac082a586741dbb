"""The CLI: help everywhere, the adapter table, and one-line errors (exit 2, no traceback) for bad input."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hneurons.cli.main", *args], capture_output=True, text=True, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "COLUMNS": "200",
                               "PYTHONPATH": os.environ.get("PYTHONPATH", "")})


def test_archs_lists_the_table() -> None:
    out = cli("archs")
    assert out.returncode == 0
    for key in ("llama", "gpt2", "gpt_neox", "gemma3", "qwen3", "phi3", "mixtral", "qwen2_moe", "gpt_oss"):
        assert key in out.stdout
    assert "mixture-of-experts" in out.stdout and "mlp.experts.down_proj[e]" in out.stdout


def test_python_dash_m_hneurons_is_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "hneurons", "archs"], capture_output=True, text=True, timeout=300,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "COLUMNS": "200",
                              "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    assert out.returncode == 0 and "gemma4" in out.stdout and "qwen3_next" in out.stdout


@pytest.mark.parametrize("command", ["run", "responses", "features", "probe", "detect", "intervene", "origin",
                                     "report", "info", "archs", "score", "generate", "serve", "judge"])
def test_every_command_has_help(command: str) -> None:
    out = cli(command, "--help")
    assert out.returncode == 0 and "Usage" in out.stdout


@pytest.mark.parametrize("args, words", [
    (["info", "/nonexistent/model"], "not a local directory"),
    (["run", "--set", "responses.kk=1"], "unknown config key 'responses.kk'"),
    (["run", "--set", "intervene.alphas=-1"], "intervene.alphas"),
    (["run", "--preset", "huge"], "unknown preset"),
    (["run", "--set", "responses.k"], "expected section.key=value"),
])
def test_bad_input_gives_one_line_error(args: list[str], words: str, tmp_path) -> None:
    out = cli(*args, *(["--runs", str(tmp_path)] if args[0] == "run" else []))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], out.stderr


def _command_paths() -> list[list[str]]:
    """Every command and subcommand of the app, as the words that call it ([] = the app itself)."""
    from typer.main import get_command

    from hneurons.cli.main import app

    def walk(cmd, path: list[str]) -> list[list[str]]:
        return [path] + [p for name, sub in getattr(cmd, "commands", {}).items() for p in walk(sub, [*path, name])]

    return walk(get_command(app), [])


def _help(path: list[str]) -> str:
    from typer.testing import CliRunner

    from hneurons.cli.main import app

    out = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    return out.output


def test_no_flag_shows_a_value_in_any_help() -> None:
    paths = _command_paths()
    assert ["config", "show"] in paths and ["score"] in paths and len(paths) > 20
    for path in paths:
        text = _help(path)
        assert "<bool>" not in text, (path, text)
        flag = next(ln for ln in text.splitlines() if "--help" in ln)
        assert re.search(r"--help\s+Show this message", flag), (path, flag)


@pytest.mark.parametrize("path, option, shown", [
    (["run"], "--preset", "[smoke|default|paper]"),
    (["run"], "--stage", "[responses|features|probe|detect|intervene|origin|report]"),
    (["plan"], "--preset", "[smoke|default|paper]"),
    (["config", "show"], "--preset", "[smoke|default|paper]"),
    (["score"], "--on-long", "[truncate|refuse]"),
    (["judge"], "--judge", "[rule|llm]"),
    (["judge"], "TASK", "[triviaqa|falseqa|jailbreak|mc]"),
    (["info"], "--dtype", "[auto|float32|bfloat16|float16]"),
])
def test_choices_are_shown_as_choices(path: list[str], option: str, shown: str) -> None:
    line = next(ln for ln in _help(path).splitlines() if f" {option} " in ln)
    assert shown in line, line


def test_help_choices_are_the_values_the_code_accepts() -> None:
    from hneurons.apply.state import ON_LONG
    from hneurons.cli import help
    from hneurons.config import PRESETS
    from hneurons.judges.files import TASKS
    from hneurons.rundir import STAGES

    assert set(help.PRESET_NAMES) == set(PRESETS) and help.JUDGE_TASKS == TASKS
    assert help.ON_LONG == ON_LONG and help.STAGES == STAGES
    import torch

    from hneurons.core.models import pick_dtype

    for name in help.DTYPES:
        pick_dtype(name, torch.device("cpu"))  # raises for a name the loader does not know
