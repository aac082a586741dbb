"""Running stages in order: responses → features → probe → detect → intervene → origin → report.

Each stage module in :mod:`hneurons.stages` exposes two functions:

* ``inputs(ctx) -> dict`` — everything its result depends on (its config section, the model
  fingerprint, fingerprints of the files it reads); hashed to decide whether it must re-run;
* ``run(ctx) -> dict`` — does the work, reading and writing only files in the run directory, and
  returns a small summary for the manifest.

A stage whose inputs are unchanged since it last finished is skipped; an interrupted stage resumes
from its own partial files (each stage appends finished units of work as it goes).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hneurons.config import Config
from hneurons.errors import StageError
from hneurons.models import LoadedModel, load_model
from hneurons.rundir import STAGES, RunDir, fingerprint_of

log = logging.getLogger("hneurons")


@dataclass
class Context:
    """What a stage gets: the config, the run directory and a lazily loaded model."""

    cfg: Config
    rundir: RunDir
    _model: LoadedModel | None = field(default=None, repr=False)
    log: Callable[[str], None] = field(default=print, repr=False)

    @property
    def model(self) -> LoadedModel:
        """The configured model, loaded on first use and shared by all stages of one process."""
        if self._model is None:
            m = self.cfg.model
            self._model = load_model(m.name, dtype=m.dtype, device=m.device, device_map=m.device_map,
                                     trust_remote_code=m.trust_remote_code)
        return self._model

    @property
    def model_fingerprint(self) -> str:
        """The model's fingerprint without loading it when the manifest already knows it."""
        if self._model is not None:
            return self._model.fingerprint
        from hneurons.models import fingerprint, resolve_model_source

        return fingerprint(str(resolve_model_source(self.cfg.model.name)))


def stage_module(name: str) -> Any:
    """The module implementing a stage."""
    if name not in STAGES:
        raise StageError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
    return importlib.import_module(f"hneurons.stages.{name}")


def run_stage(ctx: Context, name: str, force: bool = False) -> dict[str, Any]:
    """Run one stage unless its inputs are unchanged since it last finished."""
    mod = stage_module(name)
    fp = fingerprint_of(mod.inputs(ctx))
    if force:
        ctx.rundir.invalidate(name)
    if ctx.rundir.is_done(name, fp):
        ctx.log(f"[{name}] up to date, skipped (use --force to re-run)")
        return {"status": "skipped"}
    ctx.log(f"[{name}] running")
    t0 = time.perf_counter()
    summary = mod.run(ctx) or {}
    seconds = time.perf_counter() - t0
    if summary.get("status") == "not run":
        ctx.rundir.mark_skipped(name, summary.get("reason", "not configured"))
    else:
        ctx.rundir.mark_done(name, fp, seconds, summary)
    ctx.log(f"[{name}] done in {seconds:.1f} s")
    return summary


def run_all(cfg: Config, run_dir: str | Path, stages: list[str] | None = None, force: bool = False,
            log: Callable[[str], None] = print) -> Path:
    """Run the stages in order (all by default) and return the report's path."""
    rd = RunDir(Path(run_dir))
    ctx = Context(cfg, rd, log=log)
    rd.init_manifest(cfg.to_dict(), None, cfg.seed)
    for name in stages or list(STAGES):
        run_stage(ctx, name, force=force)
        if ctx._model is not None and rd.manifest().get("model") is None:
            from hneurons.models import model_info

            rd.update_manifest(model=model_info(ctx._model))
    return rd.root / "report.html"
