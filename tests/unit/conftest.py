"""The scoring state the server tests serve, so that each server test module does not build its own."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory):
    """test_scoring's tiny model (EOS slightly favoured, so answers end) with its run and probe.

    Module-scoped: a module that serves it builds it once; a module with a ``state`` fixture of its own uses that.
    """
    from test_scoring import make_loaded, write_run

    from hneurons.apply.state import load_state

    return load_state(write_run(tmp_path_factory.mktemp("run")), model=make_loaded(eos_bias=0.1))
