"""The CLI: help everywhere, the adapter table, and one-line errors (exit 2, no traceback) for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hneurons.cli.main", *args], capture_output=True, text=True, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "COLUMNS": "200"})


def test_archs_lists_the_table() -> None:
    out = cli("archs")
    assert out.returncode == 0
    for key in ("llama", "gpt2", "gpt_neox", "gemma3", "qwen3", "phi3", "mixtral", "qwen2_moe", "gpt_oss"):
        assert key in out.stdout
    assert "mixture-of-experts" in out.stdout and "mlp.experts.down_proj[e]" in out.stdout


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
