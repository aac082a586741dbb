"""A run directory never makes the tool run code: not through the model it names, not through
``trust_remote_code``, not through a model folder's ``auto_map``.

Each command runs in a fresh interpreter with its own Hugging Face module cache, and the test
checks that the evil module's marker file was never written (before the fix, ``score`` and
``responses`` wrote it: the manifest's ``model.name`` + ``trust_remote_code`` were obeyed).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_kit import evil_model_dir, make_run, model_fingerprint, run_subprocess, write_items


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "CODE-RAN"
    return evil_model_dir(tmp_path / "evil_model", marker), marker


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HF_HOME": str(tmp_path / "hf"), **extra}


@pytest.mark.parametrize("command", ["score", "responses"])
def test_manifest_naming_remote_code_runs_nothing(command, tmp_path, tiny_model, evil) -> None:
    """The manifest names a model folder with custom code and sets trust_remote_code: both ignored."""
    folder, marker = evil
    run = make_run(tmp_path / "run", tiny_model, fingerprint=model_fingerprint(folder),
                   settings={"model.name": str(folder), "model.trust_remote_code": True})
    args = ["score", str(run), "--input", str(write_items(tmp_path / "in.jsonl"))] if command == "score" \
        else ["responses", str(run)]
    # the caller's model comes from the environment, as a user's $HNEURONS_MODEL would
    out = run_subprocess(*args, env=_env(tmp_path, HNEURONS_MODEL=str(tiny_model)))
    assert not marker.exists(), "the run directory's model code ran"
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    note = next(ln for ln in out.stderr.splitlines() if ln.startswith("note: ignored"))
    assert "model.name=" in note and "model.trust_remote_code=True" in note and "--model" in note
    assert str(tiny_model) in out.stderr.splitlines()[-1]  # refused: not the model the run was fitted on


def test_auto_map_is_followed_only_with_trust_remote_code(tmp_path, tiny_model) -> None:
    """A working model folder that also carries custom code (auto_map): the caller picked it, and it
    scores from transformers' own classes; its code runs only with --trust-remote-code."""
    marker = tmp_path / "CODE-RAN"
    folder = evil_model_dir(tmp_path / "llama_with_code", marker, working=tiny_model)
    run = make_run(tmp_path / "run", folder)
    items = str(write_items(tmp_path / "in.jsonl"))
    out = run_subprocess("score", str(run), "--input", items, "-o", str(tmp_path / "out.jsonl"), "--model", str(folder),
                         env=_env(tmp_path))
    assert out.returncode == 0 and not marker.exists(), out.stderr[-2000:]
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 3
    out = run_subprocess("score", str(run), "--input", items, "-o", str(tmp_path / "out2.jsonl"), "--model", str(folder),
                         "--trust-remote-code", env=_env(tmp_path))
    assert marker.exists(), "--trust-remote-code is the caller's opt-in: the folder's code should have run"


def test_fingerprint_is_checked_before_the_model_is_imported(tmp_path, tiny_model, evil) -> None:
    """A model that is not the probe's is refused from its files, before its code could run."""
    folder, marker = evil
    run = make_run(tmp_path / "run", tiny_model)  # fitted on the tiny model
    out = run_subprocess("score", str(run), "--input", str(write_items(tmp_path / "in.jsonl")), "--model", str(folder),
                         "--trust-remote-code", env=_env(tmp_path))
    assert out.returncode == 2 and not marker.exists(), out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert "was fitted on model" in last and "--force" in last and "Traceback" not in out.stderr
