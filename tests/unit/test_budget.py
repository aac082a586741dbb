"""``budget_minutes``: the sizes a timing picks, by hand, and how a resumed run keeps them.

The expected factors are written out from the calibration run of docs/RESULTS.md (the default
preset's generating stages take 2,104 + 415 + 1,851 + 1,934 s at a timing of 3.195 questions/s,
the rest 36 s), not read back from the code under test's arithmetic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hneurons.config import get_key, load_config
from hneurons.errors import ConfigError
from hneurons.pipeline import Context
from hneurons.plan import budget
from hneurons.plan.budget import FLOORS, SCALED_KEYS, apply_sizes, describe, fit_run, fit_sizes, time_answers
from hneurons.rundir import RunDir

FULL_S = 2104 + 415 + 1851 + 1934  # the default preset's generating stages, seconds at the reference rate
FIXED_S = 36
REF = budget.REFERENCE_RATE


def test_a_machine_five_times_faster_keeps_the_default_sizes() -> None:
    cfg = load_config("default")
    assert cfg.budget_minutes == 25
    fit = fit_sizes(cfg, 25, 64, 64 / (5 * REF), spent_s=30)
    assert fit.scale == 1.0 and fit.sizes == {} and not fit.floored
    assert fit.predicted_minutes == pytest.approx((30 + (FULL_S + FIXED_S) / 5) / 60, abs=0.01)  # 21.6
    assert "so they are kept" in describe(fit)


def test_a_machine_twice_as_fast_scales_every_size_by_one_factor() -> None:
    cfg = load_config("default")
    fit = fit_sizes(cfg, 25, 64, 64 / (2 * REF), spent_s=0)
    scale = (25 * 60 - FIXED_S / 2) / (FULL_S / 2)  # 1482 / 3152 = 0.4702
    assert fit.scale == pytest.approx(scale, abs=1e-4)
    assert {k: v["used"] for k, v in fit.sizes.items()} == {
        "responses.n_questions": 2116, "probe.suppression_questions": 28, "detect.n_questions": 658,
        "detect.nonexist_questions": 329, "intervene.n_items": 28}
    assert all(v["configured"] == load_config("default").to_dict()[k.split(".")[0]][k.split(".")[1]]
               for k, v in fit.sizes.items())
    assert not fit.floored
    assert fit.predicted_minutes == pytest.approx((FULL_S + FIXED_S) / 2 / 60, abs=0.01)


def test_the_calibration_machine_reaches_one_floor() -> None:
    fit = fit_sizes(load_config("default"), 25, 64, 64 / REF, spent_s=0)
    assert fit.scale == pytest.approx((1500 - FIXED_S) / FULL_S, abs=1e-4)  # 0.2322
    used = {k: v["used"] for k, v in fit.sizes.items()}
    assert used == {"responses.n_questions": 1045, "probe.suppression_questions": 16, "detect.n_questions": 325,
                    "detect.nonexist_questions": 163, "intervene.n_items": 14}
    assert fit.floored == ("probe.suppression_questions",)  # 60 × 0.2322 = 14, held at 16
    assert "(probe.suppression_questions held at its minimum: the floor," in describe(fit)


def test_time_already_spent_leaves_less_for_the_stages() -> None:
    cfg = load_config("default")
    fresh = fit_sizes(cfg, 25, 64, 64 / (2 * REF), spent_s=0)
    late = fit_sizes(cfg, 25, 64, 64 / (2 * REF), spent_s=300)
    assert late.scale == pytest.approx((25 * 60 - 300 - FIXED_S / 2) / (FULL_S / 2), abs=1e-4)
    assert late.scale < fresh.scale


def test_floors_stop_the_shrinking_and_say_so() -> None:
    fit = fit_sizes(load_config("default"), 25, 64, 64.0, spent_s=0)  # 1 question/s: far too slow
    assert {k: v["used"] for k, v in fit.sizes.items()} == FLOORS
    assert fit.floored == SCALED_KEYS and "held at their minimums: the floor," in describe(fit)
    # a configured size already under its floor is kept, not raised to it
    smoke = load_config("smoke", overrides=["budget_minutes=1"])
    fit = fit_sizes(smoke, 1, 64, 64.0, spent_s=0)
    assert "responses.n_questions" not in fit.sizes and smoke.responses.n_questions == 48
    assert "responses.n_questions" in fit.floored  # and the log line does not call 48 a floor
    assert describe(fit).endswith("; no size can shrink (responses.n_questions, probe.suppression_questions, "
                                  "detect.n_questions, intervene.n_items held at their minimums: the floor, or the "
                                  "configured size where that is smaller; so the run may take longer than the budget)")


def test_a_budget_only_ever_shrinks() -> None:
    cfg = load_config("default", overrides=["budget_minutes=600"])
    assert fit_sizes(cfg, 600, 64, 64 / REF, spent_s=0).sizes == {}


def test_budget_minutes_is_a_checked_key() -> None:
    assert load_config("default", overrides=["budget_minutes=none"]).budget_minutes is None
    assert load_config("paper").budget_minutes is None and load_config("smoke").budget_minutes is None
    with pytest.raises(ConfigError, match="budget_minutes must be > 0"):
        load_config("default", overrides=["budget_minutes=0"])


def test_apply_sizes_leaves_a_callers_own_value() -> None:
    cfg = load_config("default", overrides=["detect.n_questions=900"])
    apply_sizes(cfg, {"responses.n_questions": {"configured": 4500, "used": 1000},
                      "detect.n_questions": {"configured": 1400, "used": 300}})
    assert cfg.responses.n_questions == 1000 and cfg.detect.n_questions == 900


def test_time_answers_warms_up_then_times_the_whole_list() -> None:
    calls: list[int] = []
    assert time_answers(lambda p: calls.append(len(p)), ["a", "b", "c", "d"]) >= 0
    assert calls == [2, 4]


class _Timer:
    """A stand-in for the model timing: counts calls, answers ``questions`` in ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.calls = seconds, 0

    def __call__(self, ctx: Any) -> tuple[int, float]:
        self.calls += 1
        return 64, self.seconds


def _ctx(tmp_path: Path, *overrides: str) -> Context:
    return Context(load_config("default", overrides=list(overrides)), RunDir(tmp_path), log=lambda s: None)


def _record(ctx: Context, fit: dict[str, Any] | None) -> None:
    """What run_all writes: the resolved config and the budget record."""
    ctx.rundir.init_manifest(ctx.cfg.to_dict(), None, 0)
    ctx.rundir.update_manifest(budget=fit)


def test_a_resumed_run_keeps_its_sizes_without_timing_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    timer = _Timer(64 / (2 * REF))
    monkeypatch.setattr(budget, "_time_sampler", timer)
    ctx = _ctx(tmp_path)
    first = fit_run(ctx, started=budget.time.perf_counter())
    assert timer.calls == 1 and ctx.cfg.responses.n_questions < 4500
    _record(ctx, first)
    used = {k: v["used"] for k, v in first["sizes"].items()}
    # the CLI's resume: the recorded (already scaled) config; the Python API's: a fresh preset config
    recorded = load_config("default", overrides={k: v for k, v in used.items()})
    for cfg in (recorded, load_config("default")):
        again = Context(cfg, ctx.rundir, log=lambda s: None)
        assert fit_run(again, started=0.0) == json.loads(json.dumps(first))
        assert {k: get_key(cfg, k) for k in SCALED_KEYS} == used
    assert timer.calls == 1


def test_the_cli_resume_reads_the_budget_back_from_the_manifest(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``hneurons run RUN_DIR`` continues with ``trust.run_config``: the budget key must survive it."""
    from hneurons.trust import run_config

    timer = _Timer(64 / (2 * REF))
    monkeypatch.setattr(budget, "_time_sampler", timer)
    ctx = _ctx(tmp_path)
    first = fit_run(ctx, started=budget.time.perf_counter())
    _record(ctx, first)
    cfg = run_config(tmp_path, {})
    assert cfg.budget_minutes == 25 and cfg.to_dict() == ctx.cfg.to_dict()
    assert fit_run(Context(cfg, ctx.rundir, log=lambda s: None), started=0.0) == json.loads(json.dumps(first))
    assert timer.calls == 1 and cfg.to_dict() == ctx.cfg.to_dict()


def test_a_changed_budget_re_times_from_the_configured_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    timer = _Timer(64 / (2 * REF))
    monkeypatch.setattr(budget, "_time_sampler", timer)
    ctx = _ctx(tmp_path)
    first = fit_run(ctx, started=budget.time.perf_counter())
    _record(ctx, first)
    longer = Context(load_config("default", overrides=["budget_minutes=50"]), ctx.rundir, log=lambda s: None)
    second = fit_run(longer, started=budget.time.perf_counter())
    assert timer.calls == 2
    assert second["sizes"]["responses.n_questions"]["configured"] == 4500  # not the first budget's 2116
    assert second["scale"] > first["scale"]
    # no budget: the configured sizes come back
    none = Context(load_config("default", overrides=[f"{k}={v['used']}" for k, v in first["sizes"].items()]
                               + ["budget_minutes=none"]), ctx.rundir, log=lambda s: None)
    assert fit_run(none, started=0.0) is None and none.cfg.responses.n_questions == 4500


@pytest.mark.parametrize("override", ["responses.backend=openai", "WORLD"])
def test_no_budget_where_one_timing_cannot_speak_for_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            override: str) -> None:
    timer = _Timer(64.0)
    monkeypatch.setattr(budget, "_time_sampler", timer)
    if override == "WORLD":
        from hneurons.core import distributed

        monkeypatch.setattr(distributed, "world", lambda: distributed.World(0, 2))
        ctx = _ctx(tmp_path)
    else:
        ctx = _ctx(tmp_path, override)
    lines: list[str] = []
    ctx.log = lines.append
    assert fit_run(ctx, started=0.0) is None and timer.calls == 0
    assert ctx.cfg.responses.n_questions == 4500 and "not applied" in lines[0]


@pytest.mark.parametrize("record, words", [
    ({"minutes": 25, "sizes": {"model.trust_remote_code": {"configured": 0, "used": 1}}}, "'model.trust_remote_code'"),
    ({"minutes": 25, "sizes": {"responses.n_questions": {"configured": 4500, "used": "all"}}}, "'responses.n_questions'"),
    ({"minutes": 25, "sizes": {"responses.n_questions": {"configured": 4500, "used": 0}}}, "'responses.n_questions'"),
    ({"minutes": 25, "sizes": [1]}, "is not a budget record"),
    ("fast", "is not a budget record"),
])
def test_a_run_directorys_budget_record_sets_only_sizes(tmp_path: Path, record: Any, words: str) -> None:
    """The record is data from the run directory: it reaches the scaled sizes and nothing else."""
    ctx = _ctx(tmp_path)
    _record(ctx, record)
    with pytest.raises(ConfigError, match=f"manifest.json: .*{words}") as err:
        fit_run(_ctx(tmp_path), started=0.0)
    assert "\n" not in str(err.value) and "delete" in str(err.value)
    assert load_config("default").model.trust_remote_code is False


def test_get_key_reads_what_set_key_writes_and_names_unknown_keys() -> None:
    from hneurons.config import set_key
    from hneurons.errors import ConfigError

    cfg = load_config("default")
    set_key(cfg, "intervene.n_items", "7")
    set_key(cfg, "budget_minutes", "none")
    assert get_key(cfg, "intervene.n_items") == 7 and get_key(cfg, "budget_minutes") is None
    with pytest.raises(ConfigError, match="unknown config key 'intervene.n_itemz'"):
        get_key(cfg, "intervene.n_itemz")
