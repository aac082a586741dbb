"""hneurons.registry.Registry: one wording for an unknown name, mapping behaviour, registration order."""

from __future__ import annotations

import pytest

from hneurons.detection.eval_sets import EVAL_SETS
from hneurons.detection.methods import BASELINES
from hneurons.errors import ConfigError
from hneurons.intervention.tasks import BENCHMARKS, get_benchmark
from hneurons.registry import Registry


def test_get_names_the_key_and_every_choice() -> None:
    reg: Registry[int] = Registry("colour")
    reg.register("red", 1)
    reg.register("blue", 2)
    assert reg.get("blue") == 2 and reg["red"] == 1 and list(reg) == ["red", "blue"] and len(reg) == 2
    with pytest.raises(ConfigError) as exc:
        reg.get("green", "paint.colour")
    assert str(exc.value) == "paint.colour: unknown colour 'green'; choose one of red, blue"
    with pytest.raises(ConfigError, match="^unknown colour 'green'"):
        reg.get("green")
    with pytest.raises(ConfigError, match="unknown colour \\['red'\\]"):
        reg.get(["red"])  # type: ignore[arg-type]  # an unhashable value is still a one-line error
    reg.register("red", 3)  # a second registration replaces the first, keeping its place
    assert dict(reg) == {"red": 3, "blue": 2}


def test_check_reports_the_first_unknown_name() -> None:
    with pytest.raises(ConfigError, match="detect.sets: unknown evaluation set 'trivia'; choose one of triviaqa, "):
        EVAL_SETS.check(["nq_open", "trivia", "also_bad"], "detect.sets")
    EVAL_SETS.check([], "detect.sets")


def test_the_registries_behind_the_config() -> None:
    assert list(EVAL_SETS) == ["triviaqa", "nq_open", "bioasq", "smoke", "nonexist"]
    assert list(BASELINES)[:3] == ["h_neurons", "h_neurons_full_l1", "random"]
    assert list(BENCHMARKS) == ["falseqa", "faitheval", "sycophancy", "jailbreak", "qa"]
    with pytest.raises(ConfigError, match="intervene.benchmarks: unknown benchmark 'truthfulqa'"):
        get_benchmark("truthfulqa")
