"""Fixtures of the hostile suite: a tiny model folder, run directories built from it, a listener,
and the CLI run in process with the trust state reset for every test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile_kit import Listener, save_tiny_model  # noqa: E402

try:  # the suite also runs against code from before the trust boundary, to show each case failing there
    import hneurons.trust  # noqa: F401

    _HAS_TRUST = True
except ImportError:
    _HAS_TRUST = False


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(autouse=True)
def caller_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No model, offline switch or endpoint announcement carried over from the outside or another test."""
    for name in ("HNEURONS_MODEL", "HNEURONS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    if _HAS_TRUST:
        import hneurons.trust as trust

        monkeypatch.setattr(trust, "_offline", False)
        monkeypatch.setattr(trust, "_named", set())


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


class CLI:
    """``hneurons ARGS`` in this process: exit status, stdout and the non-empty stderr lines."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
        self.monkeypatch, self.capsys = monkeypatch, capsys

    def __call__(self, *args: str) -> tuple[int, str, list[str]]:
        import hneurons.cli.main as cli

        self.capsys.readouterr()
        self.monkeypatch.setattr(sys, "argv", ["hneurons", *map(str, args)])
        code = 0
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = self.capsys.readouterr()
        return code, out.out, [ln for ln in out.err.splitlines() if ln.strip()]


@pytest.fixture
def hneurons(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> CLI:
    return CLI(monkeypatch, capsys)


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading any model fails the test: what is checked must be checked before a model loads."""
    import hneurons.core.models

    def load_model(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(hneurons.core.models, "load_model", load_model)
