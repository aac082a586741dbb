"""Shared fixtures for tier 2: the embedded SmolLM2-135M-Instruct, loaded once per test session.

`make test` installs the model, so a missing model is a failure here, not a skip.
"""

from __future__ import annotations

import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # set before transformers is imported: any download attempt fails
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from hneurons.core.models import LoadedModel, load_model  # noqa: E402


@pytest.fixture(scope="session")
def loaded() -> LoadedModel:
    """The embedded model in float32 on CPU (the exact dequantised weights)."""
    return load_model(None, dtype="float32", device="cpu")
