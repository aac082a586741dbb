"""The trust boundary: what a run directory may decide, and what only the person running a command may.

A run directory (its ``manifest.json``, its stage folders, a probe file exported from it) is data
that someone else may have written. It may decide how text is scored — the prompt format and
suffix, the span rule, sizes and seeds — because the package only reads those as numbers and
strings. It may not decide anything that runs code or opens a connection: the model to load,
whether that model's own code may run, and every endpoint (``*_url``). Those come only from the
caller at use time (command-line options and ``--set``, the caller's ``--config`` file, the
environment); a value recorded in a manifest is ignored, and the command says so in one line with
the option that opts in. The recorded model fingerprint is compared with the caller's model before
anything of that model is imported.

Every connection the package opens goes through :func:`open_endpoint`, which names the endpoint
once on stderr and refuses it under ``--offline`` / ``HNEURONS_OFFLINE=1``. Inputs larger than a
stated limit are refused before they are parsed or tokenized (:func:`check_input_lines`).
``docs/SECURITY.md`` states the whole model, including what the stage hashes prove.

Module imports stay light (no torch, no config) so the HTTP clients can call :func:`open_endpoint`.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hneurons.errors import ConfigError, DataError, FingerprintMismatch, StageError

# settings that load code or open connections: never taken from a run directory
CALLER_ONLY: dict[str, str] = {
    "model.name": "--model {value}",
    "model.trust_remote_code": "--set model.trust_remote_code=true",
    "origin.base_model": "--set origin.base_model={value}",
    "responses.backend_url": "--set responses.backend_url={value}",
    "responses.judge_url": "--set responses.judge_url={value}",
    "intervene.judge_url": "--set intervene.judge_url={value}",
    "spans.llm_url": "--set spans.llm_url={value}",
}
OFFLINE_ENV = "HNEURONS_OFFLINE"
MAX_INPUT_BYTES = 256 * 1024  # a question + answer this long is ~64k tokens, past most contexts

_offline = False
_named: set[str] = set()


# --------------------------------------------------------------------------- settings


def is_caller_only(key: str) -> bool:
    """Whether a ``section.key`` setting may come only from the caller (any ``*_url`` counts)."""
    return key in CALLER_ONLY or key.endswith("_url")


def quote_value(value: Any) -> str:
    """A recorded value as one printable, shell-quoted token (control characters escaped, long ones cut)."""
    text = str(value) if isinstance(value, str) and value.isprintable() else repr(value)
    text = text if len(text) <= 120 else text[:117] + "..."
    return shlex.quote(text)


def read_manifest(root: Path) -> dict[str, Any]:
    """A run directory's manifest as an object, or one line saying why it cannot be used."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise StageError(f"{root} is not a run directory (no manifest.json); pass the folder `hneurons run` wrote")
    from hneurons.data.readers import read_json_object

    return read_json_object(path, DataError, "it was not written by `hneurons run`: restore it or use another "
                                             "run directory")


def recorded_settings(manifest: Mapping[str, Any], path: Path | str) -> dict[str, Any]:
    """The manifest's config as flat ``section.key`` values (caller-only keys still included)."""
    config = manifest.get("config")
    if not isinstance(config, dict):
        raise StageError(f"{path} has no 'config' object; it was not written by `hneurons run`")
    from hneurons.config_sections import TOP_LEVEL_KEYS

    flat = {f"{s}.{k}": v for s, sec in config.items() if isinstance(sec, dict) for k, v in sec.items()}
    flat.update({k: config[k] for k in TOP_LEVEL_KEYS if k in config})  # seed, budget_minutes
    return flat


def split_caller_only(recorded: Mapping[str, Any], given: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(kept, ignored)``: the recorded settings a run may decide, and the caller-only ones it tried to.

    A caller-only key left at its default (None, False, empty) or given by the caller is dropped
    without a note; only values the caller would otherwise not know were ignored are reported.
    """
    given = set(given)
    kept = {k: v for k, v in recorded.items() if not is_caller_only(k)}
    ignored = {k: v for k, v in recorded.items()
               if is_caller_only(k) and k not in given and v not in (None, False, "")}
    return kept, ignored


def _say(line: str) -> None:
    """One unwrapped line on stderr (a terminal width never splits a note or an endpoint)."""
    print(line, file=sys.stderr, flush=True)


def ignored_note(ignored: Mapping[str, Any], source: str) -> str:
    """One line: which recorded settings were ignored and the options that would use them."""
    shown = ", ".join(f"{k}={quote_value(v)}" for k, v in ignored.items())
    how = " ".join(CALLER_ONLY.get(k, f"--set {k}={{value}}").format(value=quote_value(v)) for k, v in ignored.items())
    return (f"note: ignored {shown} from {source}: a run directory never chooses the model, its code or a network "
            f"endpoint; to use them, pass {how}")


def caller_config(recorded: Mapping[str, Any], caller: Mapping[str, Any], *, source: str,
                  given: Iterable[str] = (), note: Callable[[str], None] | None = None) -> Any:
    """The config to use: a run's recorded settings minus the caller-only ones, the caller's on top.

    ``given`` names caller-only keys the caller settled another way (e.g. by passing a loaded
    model), so they are not reported as ignored. The note goes to ``note`` (default: one stderr line).
    """
    from hneurons.config import load_config

    kept, ignored = split_caller_only(recorded, {*caller, *given})
    if ignored:
        (note or _say)(ignored_note(ignored, source))
    return load_config("paper", overrides={**kept, **caller})


# --------------------------------------------------------------------------- the model


def recorded_fingerprint(manifest: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(fingerprint, label)`` of the model a run records it was made with (``hneurons run`` writes it)."""
    model = manifest.get("model")
    if isinstance(model, dict) and isinstance(model.get("fingerprint"), str):
        label = model.get("source") or model.get("name")
        return model["fingerprint"], label if isinstance(label, str) else None
    return None, None


def source_fingerprint(name: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """The local source a model name resolves to and its fingerprint, from its files alone (nothing imported)."""
    from hneurons.core.models import fingerprint, resolve_model_source

    source = resolve_model_source(name)
    return source, fingerprint(str(source))


def check_run_model(root: Path, manifest: Mapping[str, Any], name: str | None) -> None:
    """Refuse to continue a run with another model than the one its manifest records (checked from files;
    a run without that record is left to the stages' own fingerprint checks)."""
    recorded, label = recorded_fingerprint(manifest)
    if recorded is None:
        return
    source, fp = source_fingerprint(name)
    if fp != recorded:
        made = f"{recorded} (recorded as {quote_value(label)})" if label else recorded
        raise FingerprintMismatch(
            f"{root} was made with model {made} but the model given, {source}, is {fp}; pass --model with the "
            "run's model to continue it (a run directory never chooses the model it loads), or use a new run "
            "directory for this model")


def run_config(root: Path, caller: Mapping[str, Any], note: Callable[[str], None] | None = None) -> Any:
    """The config a command continues an existing run with (stage commands, ``hneurons run``)."""
    root = Path(root)
    manifest = read_manifest(root)
    path = root / "manifest.json"
    cfg = caller_config(recorded_settings(manifest, path), caller, source=str(path), note=note)
    check_run_model(root, manifest, cfg.model.name)
    return cfg


# --------------------------------------------------------------------------- integrity


@dataclass
class StageCheck:
    """One row of ``hneurons verify``: ``ok``, ``skipped``, ``not run``, ``unfinished`` or ``damaged``."""

    stage: str
    status: str
    files: int  # files its marker records (and were checked)
    notes: list[str]

    @property
    def verified(self) -> bool:
        """Nothing in the stage's folder goes unchecked or fails its check."""
        return self.status in ("ok", "skipped", "not run")


def check_stage(rundir: Any, stage: str) -> StageCheck:
    """Check one stage of a :class:`~hneurons.rundir.RunDir` against its done-marker, failing closed."""
    from hneurons.rundir import DONE_FILE

    marker, problem = rundir.marker(stage)
    if marker is not None and "skipped" in marker:
        return StageCheck(stage, "skipped", 0, [str(marker.get("skipped"))])
    if marker is None and problem is None and not rundir.manifest_says_done(stage):
        folder = rundir.root / stage
        files = [f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(".")] if folder.is_dir() else []
        if files:
            return StageCheck(stage, "unfinished", 0, [f"{len(files)} file(s) but no {DONE_FILE}: interrupted, or its "
                                                       "marker was removed"])
        return StageCheck(stage, "not run", 0, [])
    bad = rundir.damaged(stage, required=True)
    recorded = len((marker or {}).get("outputs") or {})
    if bad:
        return StageCheck(stage, "damaged", recorded,
                          [f"{p.relative_to(rundir.root) if p.is_relative_to(rundir.root) else p} {why}" for p, why in bad])
    return StageCheck(stage, "ok", recorded, [])


def check_run(root: Path) -> list[StageCheck]:
    """Every stage of a run checked against its marker, and a verified probe's weights (finite, shaped)."""
    from hneurons.rundir import STAGES, RunDir

    read_manifest(root)  # not a run directory, or its manifest is unusable: one line
    rundir = RunDir(Path(root))
    rows = [check_stage(rundir, stage) for stage in STAGES]
    at = STAGES.index("probe")
    if rows[at].status == "ok" and (rundir.root / "probe" / "probe.safetensors").is_file():
        from hneurons.apply.state import read_run_probe
        from hneurons.errors import HNeuronsError

        try:
            read_run_probe(rundir.root)
        except HNeuronsError as exc:
            rows[at] = StageCheck("probe", "damaged", rows[at].files, [str(exc)])
    return rows


# --------------------------------------------------------------------------- the network


def go_offline() -> None:
    """Refuse every connection from now on in this process (``--offline``)."""
    global _offline
    _offline = True


def is_offline() -> bool:
    """``--offline`` was given or ``HNEURONS_OFFLINE`` is set to a true value."""
    return _offline or os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def open_endpoint(url: str, what: str) -> None:
    """Gate for every connection the package opens: refused offline, otherwise named once on stderr."""
    if is_offline():
        raise ConfigError(f"offline (--offline or {OFFLINE_ENV}=1): refusing to contact {url} ({what}); "
                          "run without --offline to allow it")
    if url not in _named:
        _named.add(url)
        _say(f"network: {what} at {url}")


# --------------------------------------------------------------------------- input limits


def check_text_size(text: str, limit: int, what: str) -> None:
    """Refuse a text over ``limit`` UTF-8 bytes (before it is tokenized)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise DataError(f"{what} is {size} bytes, more than the limit of {limit} bytes; shorten it or raise "
                        "the limit with --max-input-bytes")


def check_input_lines(path: Path, limit: int) -> None:
    """Refuse an input file with a line over ``limit`` bytes, reading at most ``limit`` + 2 bytes per line."""
    p = Path(path)
    if not p.is_file():
        return  # the reader names a missing file
    with p.open("rb") as fh:
        n = 0
        while True:
            line = fh.readline(limit + 2)
            if not line:
                return
            n += 1
            if len(line.rstrip(b"\r\n")) > limit:
                raise DataError(f"{p} line {n} is longer than the limit of {limit} bytes; shorten it or raise the "
                                "limit with --max-input-bytes")
            if not line.endswith(b"\n"):
                return
