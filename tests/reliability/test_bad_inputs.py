"""Bad user input: one line, exit 2, and before the model loads (the loader is rigged to fail the test)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

import hneurons.cli.main as cli
import hneurons.core.models
from hneurons.config import load_config
from hneurons.rundir import RunDir


@pytest.fixture
def no_model(monkeypatch):
    def load_model(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(hneurons.core.models, "load_model", load_model)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, list[str]]:
    monkeypatch.setattr(sys, "argv", ["hneurons", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    return exc.value.code, lines


def one_line_error(monkeypatch, capsys, *args: str) -> str:
    code, lines = run_cli(monkeypatch, capsys, *args)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    rd = RunDir(tmp_path / "run")
    cfg = load_config("smoke", overrides={"model.prompt_format": "plain"})
    rd.init_manifest(cfg.to_dict(), None, cfg.seed)
    return rd.root


def test_score_on_an_empty_input(run_dir, tmp_path, monkeypatch, capsys, no_model) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    msg = one_line_error(monkeypatch, capsys, "score", str(run_dir), "--input", str(empty))
    assert str(empty) in msg and "no items" in msg


def test_unknown_preset_on_an_existing_run(run_dir, monkeypatch, capsys, no_model) -> None:
    msg = one_line_error(monkeypatch, capsys, "probe", str(run_dir), "--preset", "nosuch")
    assert "unknown preset 'nosuch'" in msg


def test_other_preset_on_an_existing_run_is_reported(run_dir, capsys) -> None:
    cfg = cli._config("paper", None, None, None, run_dir)
    assert cfg.responses.n_questions == load_config("smoke").responses.n_questions  # the run's config wins
    err = capsys.readouterr().err
    assert "differs from preset 'paper'" in err and "the run's config wins" in err
    cli._config("smoke", None, ["model.prompt_format=plain"], None, run_dir)  # what it was made with: no note
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("args, words", [
    (["--alpha", "-1"], "--alpha must be a finite number ≥ 0"),
    (["--alpha", "nan"], "--alpha must be a finite number ≥ 0"),
    (["--abstain-above", "1.5"], "--abstain-above must be a probability in [0, 1]"),
])
def test_generate_options(args, words, run_dir, monkeypatch, capsys, no_model) -> None:
    assert words in one_line_error(monkeypatch, capsys, "generate", str(run_dir), "What is 2+2?", *args)


def test_generate_empty_question(run_dir, monkeypatch, capsys, no_model) -> None:
    assert "question 1 is empty" in one_line_error(monkeypatch, capsys, "generate", str(run_dir), "  ")


def test_serve_on_a_port_in_use(run_dir, monkeypatch, capsys, no_model) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        msg = one_line_error(monkeypatch, capsys, "serve", str(run_dir), "--port", str(port))
    assert f"cannot listen on 127.0.0.1:{port}" in msg and "--port" in msg
    msg = one_line_error(monkeypatch, capsys, "serve", str(run_dir), "--alpha", "-2")
    assert "--alpha" in msg


def test_serve_without_the_server_packages(run_dir, monkeypatch, capsys, no_model) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi now raises ImportError
    monkeypatch.delitem(sys.modules, "hneurons.apply.server", raising=False)
    msg = one_line_error(monkeypatch, capsys, "serve", str(run_dir), "--port", "0")
    assert 'pip install "hneurons[serve]"' in msg


@pytest.mark.parametrize("text, words", [
    ("[responses]\nkk = 3\n", "unknown config key 'responses.kk'"),
    ("[responses]\nk = 0\n", "responses.k must be ≥ 1"),
    ("[responses]\nk = 'five'\n", "responses.k: 'five' is not a valid int"),
    ("[responses\n", "not valid TOML"),
])
def test_config_file_errors_name_the_file(text, words, tmp_path, monkeypatch, capsys, no_model) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    msg = one_line_error(monkeypatch, capsys, "run", "--config", str(bad), "--runs", str(tmp_path / "runs"))
    assert str(bad) in msg and words in msg


def test_set_fixes_a_bad_file_value_and_then_no_file_is_blamed(tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[responses]\nk = 0\n")
    assert load_config("smoke", file=bad, overrides=["responses.k=3"]).responses.k == 3
    with pytest.raises(Exception, match=r"^responses.k must be"):
        load_config("smoke", file=None, overrides=["responses.k=0"])


@pytest.mark.parametrize("config, words", [
    ({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "d_model": 64, "vocab_size": 100},
     "not a decoder-only causal LM"),
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
      "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}, "no weights"),
])
def test_unloadable_model_folders_say_what_to_do(config, words, tmp_path, monkeypatch, capsys) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    msg = one_line_error(monkeypatch, capsys, "info", str(folder))
    assert str(folder) in msg and words in msg
