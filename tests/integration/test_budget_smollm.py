"""``budget_minutes`` on the embedded model: the timing runs the run's own sampler and prompts.

The unit tests (tests/unit/test_budget.py) check the arithmetic with a stand-in timing; this one
checks that the real timing answers the configured pool through the configured prompt format, and
that what it records is what the manifest and a resumed run use.
"""

from __future__ import annotations

from pathlib import Path

from hneurons.config import get_key, load_config
from hneurons.core.models import LoadedModel
from hneurons.pipeline import Context
from hneurons.plan import budget
from hneurons.rundir import RunDir


def test_the_timing_answers_the_pool_and_shrinks_to_fit(tmp_path: Path, loaded: LoadedModel) -> None:
    # the default preset's sizes, but answers capped at 8 tokens so the timing takes a few seconds
    cfg = load_config("default", overrides=["budget_minutes=1", "responses.max_new_tokens=8"])
    ctx = Context(cfg, RunDir(tmp_path), _model=loaded, log=lambda s: None)
    questions, seconds = budget._time_sampler(ctx)
    assert questions == budget.TIMING_QUESTIONS and 0 < seconds < 300
    record = budget.fit_run(ctx, started=budget.time.perf_counter())
    assert record is not None and record["timing_questions"] == 64 and record["rate"] > 0
    # one minute cannot hold the default sizes on any CPU: every size shrinks, none below its floor
    assert set(record["sizes"]) == set(budget.SCALED_KEYS) and record["scale"] < 1
    for key, size in record["sizes"].items():
        assert budget.FLOORS[key] <= size["used"] < size["configured"] == get_key(load_config("default"), key)
        assert get_key(cfg, key) == size["used"]
