"""Running stages in order: responses → features → probe → detect → intervene → origin → report.

Each stage module in :mod:`hneurons.stages` exposes two functions:

* ``inputs(ctx) -> dict`` — everything its result depends on (its config section, the model
  fingerprint, fingerprints of the files it reads); hashed to decide whether it must re-run;
* ``run(ctx) -> dict`` — does the work, reading and writing only files in the run directory, and
  returns a small summary for the manifest;
* optionally ``outputs(ctx) -> list[Path]`` — the files it owns, hashed into its done-marker
  (default: the plain files in its folder, see :meth:`~hneurons.rundir.RunDir.default_outputs`).

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
from hneurons.core import distributed
from hneurons.core.models import LoadedModel, load_model
from hneurons.rundir import STAGES, RunDir, fingerprint_of

log = logging.getLogger("hneurons")

SHARDED_STAGES = frozenset({"responses", "features", "probe", "detect", "intervene", "origin"})
"""Stages every rank runs under torchrun (each loops over its shard of the items; rank 0 writes).
The others (the report) run on rank 0 alone."""


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
        from hneurons.core.models import fingerprint, resolve_model_source

        return fingerprint(str(resolve_model_source(self.cfg.model.name)))


def stage_module(name: str) -> Any:
    """The module implementing a stage."""
    if name not in STAGES:
        raise StageError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
    return importlib.import_module(f"hneurons.stages.{name}")


def run_stage(ctx: Context, name: str, force: bool = False) -> dict[str, Any]:
    """Run one stage unless its inputs are unchanged and its files intact since it last finished.

    Before running, the files of every finished earlier stage are checked against the hashes in
    their done-markers, so a damaged artefact stops the run with its name instead of being used.
    With ``force`` the old done-marker stays until the new one replaces it.
    """
    mod = stage_module(name)
    for earlier in STAGES[:STAGES.index(name)]:
        ctx.rundir.verify(earlier)
    fp = fingerprint_of(mod.inputs(ctx))
    if not force and ctx.rundir.is_done(name, fp):
        ctx.log(f"[{name}] up to date, skipped (use --force to re-run)")
        return {"status": "skipped"}
    ctx.log(f"[{name}] running")
    t0 = time.perf_counter()
    main = distributed.is_main()
    summary = (mod.run(ctx) or {}) if main or name in SHARDED_STAGES else {}
    seconds = time.perf_counter() - t0
    distributed.barrier(f"finishing stage {name}")  # rank 0 has written what the next stage reads
    if main and summary.get("status") == "not run":
        ctx.rundir.mark_skipped(name, summary.get("reason", "not configured"))
    elif main:
        outputs = mod.outputs(ctx) if hasattr(mod, "outputs") else None
        ctx.rundir.mark_done(name, fp, seconds, summary, outputs=outputs)
    distributed.barrier(f"recording stage {name}")
    ctx.log(f"[{name}] done in {seconds:.1f} s")
    return summary


def resolve_prompt_format(cfg: Config, log: Callable[[str], None] = print) -> dict[str, str] | None:
    """Prompt a model without a chat template (a base model) in the plain format, saying so.

    ``model.prompt_format = "chat"`` (the default) means the model's own chat template; a
    pre-trained checkpoint has none, so the run switches to ``"{question}\\nAnswer:"`` (the paper,
    arXiv 2512.01797 §6.3.1) instead of failing. This is decided from the model files before any stage fingerprints
    its inputs, so the stages see (and record) the format they really use. Returns the note for
    the manifest when it switched, else None.
    """
    from hneurons.core.models import resolve_model_source, source_has_chat_template

    if cfg.model.prompt_format != "chat":
        return None
    source = resolve_model_source(cfg.model.name)
    if source_has_chat_template(source):
        return None
    cfg.model.prompt_format = "plain"
    reason = f"{source} has no chat template (a base model)"
    log(f"[model] warning: {reason}; prompting it in the plain format \"{{question}}\\nAnswer:\" "
        "(model.prompt_format = plain)")
    return {"configured": "chat", "used": "plain", "reason": reason}


def run_all(cfg: Config, run_dir: str | Path, stages: list[str] | None = None, force: bool = False,
            log: Callable[[str], None] = print) -> Path:
    """Run the stages in order (all by default) and return the report's path."""
    from hneurons.plan.budget import fit_run

    started = time.perf_counter()
    rd = RunDir(Path(run_dir))
    ctx = Context(cfg, rd, log=log)
    switched = resolve_prompt_format(cfg, log)
    budget = fit_run(ctx, started)  # sizes settle before the manifest and any fingerprint see them
    if distributed.is_main():
        rd.init_manifest(cfg.to_dict(), None, cfg.seed)
        rd.update_manifest(prompt_format=switched or {"configured": cfg.model.prompt_format,
                                                      "used": cfg.model.prompt_format}, budget=budget)
    distributed.barrier("starting the run")
    for name in stages or list(STAGES):
        run_stage(ctx, name, force=force)
        if distributed.is_main() and ctx._model is not None and rd.manifest().get("model") is None:
            from hneurons.core.models import model_info

            rd.update_manifest(model=model_info(ctx._model))
    return rd.root / "report.html"
