"""One exception hierarchy for everything a user can get wrong.

Every message says *what* is wrong, *where* (file, line, field, option) and *what to do*, so the
CLI can print it as one line without a traceback. Code deep inside the package raises these
instead of letting a ``KeyError`` or ``IndexError`` escape to the user.
"""

from __future__ import annotations

from sklearn.exceptions import NotFittedError as _SkNotFittedError


class HNeuronsError(Exception):
    """Base class: an error meant for a person, printed as one line by the CLI."""


class ConfigError(HNeuronsError, ValueError):
    """A configuration value, option or preset is invalid."""


class DataError(HNeuronsError, ValueError):
    """A data file is missing, malformed, or lacks a field (message names file, line and field)."""


class ModelLoadError(HNeuronsError):
    """A model could not be found or loaded offline."""


class UnsupportedArchitecture(HNeuronsError):
    """``config.model_type`` has no entry in the adapter table (message lists the supported ones)."""


class FingerprintMismatch(HNeuronsError):
    """Stored artefacts (features, probe) belong to another model than the one given."""


class MissingExtra(HNeuronsError, ImportError):
    """An optional dependency is not installed (the message says which ``pip install`` adds it)."""


class StageError(HNeuronsError):
    """A pipeline stage cannot run, e.g. because an earlier stage's output is missing."""


class EndpointError(HNeuronsError):
    """An OpenAI-compatible server (sampling backend or LLM judge) is unreachable or answers garbage."""


class NotFittedError(HNeuronsError, _SkNotFittedError):
    """A probe was used before ``fit`` (also a scikit-learn ``NotFittedError``)."""
