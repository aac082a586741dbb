"""Fit a run into a time budget (``budget_minutes``): time the model once, then shrink the sizes.

Why: the default preset is the README's main job on 2 CPU cores, and how fast those cores run the
model differs by 4× or more between CPUs (bf16 in hardware or float32 only; docs/RESULTS.md). A
fixed preset either wastes the fast machines or runs for more than 100 minutes on the slow ones. So a run
with ``budget_minutes`` set first greedy-answers :data:`TIMING_QUESTIONS` questions of its own
training pool with its own sampler (a few seconds), predicts how long the configured sizes would
take, and when that is over the budget scales the sizes of the generation stages
(:data:`SCALED_KEYS`) by one common factor, never above the configured values and never below
:data:`FLOORS`. The factor, the timing and every changed size go into the manifest (``budget``),
so a resumed run uses the same sizes without timing again and the report says what was shrunk.

The time model is the default preset's stage times on the machine it was calibrated on
(:data:`REFERENCE_SECONDS`), each scaled by how many generations the stage does under the config
(:func:`hneurons.plan.workload.stage_work`) and by how much slower this machine's timing ran than
that one's (:data:`REFERENCE_RATE`). It is a rough model for the default preset's settings;
the sizes it picks are in the manifest either way, and ``budget_minutes = none`` runs the
configured sizes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hneurons.config import Config, get_key, load_config, set_key
from hneurons.errors import ConfigError
from hneurons.plan.workload import stage_work

SCALED_KEYS = ("responses.n_questions", "probe.suppression_questions", "detect.n_questions",
               "detect.nonexist_questions", "intervene.n_items")
"""The sizes a budget may shrink: every one sets how many prompts a generating stage answers."""

FLOORS = {"responses.n_questions": 400, "probe.suppression_questions": 16, "detect.n_questions": 200,
          "detect.nonexist_questions": 100, "intervene.n_items": 12}
"""Below these a stage has too few items per class to say anything (the embedded model answers
~7 % of TriviaQA correctly and refuses ~5 % of NonExist questions), so a budget stops there."""

REFERENCE_SECONDS = {"responses": 2104.0, "probe": 415.0, "detect": 1851.0, "intervene": 1934.0}
"""Seconds the configured default sizes take on the machine the budget was calibrated on: a 2-core
AVX2 EPYC with no native bf16 (float32), 2026-12-07. Measured there with ``make run`` at a budget
that scaled the sizes to 0.294 (responses 618 s, probe 124 s, detect 629 s, intervene 580 s; the
stages did 29.4 %, 30 %, 34 % and 30 % of the default preset's generations), divided by those
fractions (docs/RESULTS.md). Calibrated where a budget binds; a faster machine is extrapolated by
its timing rate alone, which overstates its time where the stages gain more than the timing does
(native bf16 speeds long prompts up more than short greedy answers)."""

REFERENCE_OVERHEAD_S = 36.0
"""The rest of that run: features 30 s, report 5 s and origin, counted as a fixed cost."""

REFERENCE_RATE = 3.195
"""Questions/s of the timing on that machine in the same run (64 questions in 20.0 s)."""

TIMING_QUESTIONS = 64
"""Questions of the timing: one full batch of the default preset's sampler."""


@dataclass(frozen=True)
class Fit:
    """What a budget decided: the timing, the prediction for the configured sizes and the sizes used."""

    minutes: float
    timing_questions: int
    timing_seconds: float
    predicted_minutes: float  # the configured sizes at the timed rate, with what the run had spent
    scale: float  # ≤ 1; 1 = the configured sizes fit
    sizes: dict[str, dict[str, int]]  # key → {"configured": n, "used": m}, the changed keys only
    floored: tuple[str, ...]  # keys a floor held above the factor: the budget may be exceeded

    @property
    def rate(self) -> float:
        """Questions per second of the timing."""
        return self.timing_questions / self.timing_seconds

    def to_dict(self) -> dict[str, Any]:
        """What the manifest records under ``budget``."""
        return {**asdict(self), "rate": round(self.rate, 3)}


def _generations(cfg: Config) -> dict[str, int]:
    """Generations per budgeted stage under ``cfg`` (the plan's counts; only their ratios matter here)."""
    work = stage_work(cfg)
    return {stage: work[stage].generations for stage in REFERENCE_SECONDS}


_REFERENCE_GENERATIONS = _generations(load_config("default"))


def predict_seconds(cfg: Config, rate: float) -> tuple[float, float]:
    """``(scaled, fixed)``: seconds of the generation stages under ``cfg`` at ``rate`` questions/s, and of the rest."""
    slower = REFERENCE_RATE / rate
    gens = _generations(cfg)
    scaled = sum(REFERENCE_SECONDS[s] * gens[s] / max(1, _REFERENCE_GENERATIONS[s]) for s in REFERENCE_SECONDS)
    return scaled * slower, REFERENCE_OVERHEAD_S * slower


def fit_sizes(cfg: Config, minutes: float, questions: int, seconds: float, spent_s: float) -> Fit:
    """The sizes that fit ``minutes`` when ``questions`` took ``seconds`` and the run has spent ``spent_s``.

    One factor for every key in :data:`SCALED_KEYS` keeps the stages in the configured proportion;
    each size is rounded, capped at its configured value and held at its floor (a configured value
    below the floor is kept).
    """
    rate = questions / seconds
    scaled, fixed = predict_seconds(cfg, rate)
    left = minutes * 60.0 - spent_s - fixed
    scale = 1.0 if scaled <= left else max(0.0, left) / scaled
    sizes: dict[str, dict[str, int]] = {}
    floored: list[str] = []
    for key in SCALED_KEYS:
        configured = get_key(cfg, key)
        if configured is None or scale >= 1.0:
            continue
        floor = min(configured, FLOORS[key])
        used = max(floor, round(configured * scale))
        if used > round(configured * scale):
            floored.append(key)
        if used != configured:
            sizes[key] = {"configured": configured, "used": used}
    predicted = (spent_s + scaled + fixed) / 60.0
    return Fit(minutes, questions, round(seconds, 3), round(predicted, 2), round(min(1.0, scale), 4), sizes,
               tuple(floored))


def apply_sizes(cfg: Config, sizes: dict[str, dict[str, int]]) -> None:
    """Set the ``used`` sizes on ``cfg``, except where the caller has chosen another value since.

    A resumed run's config (from its manifest) already holds them; a fresh config of the same preset
    holds the configured ones; anything else is the caller's own ``--set`` and wins.
    """
    for key, size in sizes.items():
        if get_key(cfg, key) in (size["configured"], size["used"]):
            set_key(cfg, key, size["used"])


def time_answers(answer: Callable[[list[str]], object], prompts: list[str]) -> float:
    """Seconds ``answer`` takes for ``prompts``, after a two-prompt warm-up (first-call set-up is not speed)."""
    answer(prompts[:2])
    t0 = time.perf_counter()
    answer(prompts)
    return time.perf_counter() - t0


def describe(fit: Fit) -> str:
    """One log line: the timing, the prediction and what was shrunk (or why nothing could be)."""
    head = (f"budget {fit.minutes:g} min: {fit.timing_questions} questions answered in {fit.timing_seconds:.1f} s "
            f"({fit.rate:.2f}/s); the configured sizes would take ~{fit.predicted_minutes:.0f} min")
    if fit.scale >= 1.0:
        return head + ", so they are kept"
    held = "its minimum" if len(fit.floored) == 1 else "their minimums"
    tail = (f" ({', '.join(fit.floored)} held at {held}: the floor, or the configured size where that is smaller; "
            "so the run may take longer than the budget)") if fit.floored else ""
    if not fit.sizes:
        return f"{head}; no size can shrink{tail}"
    changed = ", ".join(f"{k} {v['configured']}→{v['used']}" for k, v in fit.sizes.items())
    return (f"{head}; scaled by {fit.scale:.2f}: {changed}{tail}. "
            "The configured sizes: --set budget_minutes=none")


def recorded_budget(record: Any, source: Path) -> dict[str, Any] | None:
    """A manifest's ``budget`` record, checked: it may only set :data:`SCALED_KEYS` to positive integers.

    A run directory is data (it may come from someone else), so its record must not reach any
    other key, least of all the caller-only ones (model, remote code, URLs).
    """
    if record is None:
        return None
    sizes = record.get("sizes") if isinstance(record, dict) else None
    if not isinstance(sizes, dict) or not isinstance(record.get("minutes"), (int, float)):
        raise ConfigError(f"{source}: 'budget' is not a budget record; delete that entry to time the run again")
    for key, size in sizes.items():
        ok = key in SCALED_KEYS and isinstance(size, dict) and all(
            type(size.get(f)) is int and size[f] >= 1 for f in ("configured", "used"))
        if not ok:
            raise ConfigError(f"{source}: budget.sizes[{key!r}] = {size!r} is not a size this run may set "
                              f"(keys: {', '.join(SCALED_KEYS)}; positive integers); delete the 'budget' entry")
    return record


def _time_sampler(ctx: Any) -> tuple[int, float]:
    """``(questions, seconds)``: greedy answers to the training pool's first questions with the run's sampler."""
    from hneurons.core.generation import SamplingParams
    from hneurons.data import load_dataset
    from hneurons.stages._shared import sampling_backend
    from hneurons.text.prompts import answer_stop, render_prompt, user_text

    r, chat = ctx.cfg.responses, ctx.cfg.model.prompt_format == "chat"
    records = load_dataset(r.dataset, r.path, limit=TIMING_QUESTIONS)
    prompts = [render_prompt(ctx.model.tokenizer, user_text(rec.question, r.suffix), chat=chat) for rec in records]
    backend = sampling_backend(ctx)
    params = SamplingParams(temperature=0.0, max_new_tokens=r.max_new_tokens, stop=answer_stop(chat))
    return len(prompts), time_answers(lambda p: backend.generate(p, params, progress=False), prompts)


def fit_run(ctx: Any, started: float) -> dict[str, Any] | None:
    """Apply ``budget_minutes`` to ``ctx.cfg`` before any stage fingerprints it; the manifest's ``budget`` record.

    A run that recorded a budget keeps its sizes (a resume times nothing and changes no fingerprint);
    a changed budget re-times from the configured sizes. Under torchrun, or with a sampling server,
    the timing of one local process says nothing about the run's speed, so the sizes are kept.
    """
    from hneurons.core import distributed

    cfg = ctx.cfg
    recorded = recorded_budget(ctx.rundir.manifest().get("budget"), ctx.rundir.manifest_path)
    if recorded:
        for key, size in recorded["sizes"].items():  # back to the configured sizes first
            if get_key(cfg, key) == size["used"]:
                set_key(cfg, key, size["configured"])
    if cfg.budget_minutes is None:
        return None
    if recorded and recorded.get("minutes") == cfg.budget_minutes:
        apply_sizes(cfg, recorded["sizes"])
        ctx.log(f"budget {cfg.budget_minutes:g} min: this run's recorded sizes are kept (scale {recorded.get('scale')})")
        return recorded
    if distributed.world().size > 1 or cfg.responses.backend != "hf":
        ctx.log(f"budget {cfg.budget_minutes:g} min not applied: the run uses several processes or a sampling "
                "server, which one local timing cannot speak for; the configured sizes are kept")
        return None
    questions, seconds = _time_sampler(ctx)
    fit = fit_sizes(cfg, cfg.budget_minutes, questions, seconds, time.perf_counter() - started)
    apply_sizes(cfg, fit.sizes)
    ctx.log(describe(fit))
    return fit.to_dict()
