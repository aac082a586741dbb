"""Typed configuration with presets, TOML files and ``--set section.key=value`` overrides.

One parameter travels CLI → config → stage → hook unchanged: every stage reads its own section
of :class:`Config`, and the fully resolved config is written to the run manifest, so a run can be
repeated from its manifest alone.

Presets:

* ``paper`` — the paper's sizes and settings (the paper, arXiv 2512.01797, §6): 10,000 questions, K = 10 at T = 1.0,
  all 10 samples must agree, 1,000 + 1,000 training questions. Needs a GPU and hours.
* ``default`` — the README's main job on the embedded 135M model on 2 CPU cores (19.8 min on a quiet
  machine with native bf16 at 53ca601; docs/RESULTS.md). ``budget_minutes = 25`` shrinks its sizes
  on slower machines (:mod:`hneurons.plan.budget`).
  The model answers only ~7 % of TriviaQA correctly and almost never 10/10 at T = 1, so this
  preset screens with a greedy pass and checks consistency with K = 5 samples at T = 0.5
  (see README "Default preset" for the measured effect). Everything else follows the paper.
* ``smoke`` — a tiny slice for tests (a few minutes on CPU).
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any

from hneurons.config_keys import KeyInfo as KeyInfo, check_keys, coerce
from hneurons.config_keys import describe as describe
from hneurons.config_sections import (PAPER_SUFFIX, Config, DetectConfig, FeaturesConfig, InterveneConfig,
                                      ModelConfig, OriginConfig, ProbeConfig, ResponsesConfig, SpansConfig)
from hneurons.core.alpha import check_alpha
from hneurons.errors import ConfigError

__all__ = ["PAPER_SUFFIX", "PRESETS", "Config", "DetectConfig", "FeaturesConfig", "InterveneConfig", "KeyInfo",
           "ModelConfig", "OriginConfig", "ProbeConfig", "ResponsesConfig", "SpansConfig", "check_guard", "describe",
           "get_key", "load_config", "parse_overrides", "set_key", "validate"]

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # sized for ≥ 150 + 150 training, ≥ 100 + 100 TriviaQA and ≥ 60 + 60 NQ-Open detection items and 60
    # intervention items with the embedded model (docs/RESULTS.md, "The default run")
    "default": {
        # a CPU without native bf16 runs the model ~4x slower: the run shrinks its sizes to fit (plan.budget)
        "budget_minutes": 25,
        "responses.n_questions": 4500,
        "responses.screen": True,
        "responses.k": 5,
        "responses.temperature": 0.5,
        "responses.max_new_tokens": 32,
        "responses.min_agree": 4,
        "responses.heldout_fraction": 0.15,
        "responses.per_class": 1000,
        "responses.min_per_class": 10,
        "features.batch_size": 16,
        "probe.suppression_questions": 60,
        "probe.stability_resamples": 5,
        "detect.n_questions": 1400,
        "detect.nonexist_questions": 700,
        "detect.risk_coverage_items": 500,
        "detect.temperature": 0.0,
        "detect.max_new_tokens": 32,
        "detect.min_per_class": 5,
        "detect.random_draws": 20,
        "intervene.n_items": 60,
        "intervene.sycophancy_source": "known_correct",
        # three α instead of four: a slope's variance is σ²/(n·Σ(α-ᾱ)²), 1/4.67n for {0, 1, 3} against
        # 1/5n for {0, 1, 2, 3}, for 5 generation passes instead of 7 (`make run` ≤ 30 min on 2 cores)
        "intervene.alphas": [0.0, 1.0, 3.0],
        "intervene.random_seeds": 1,
        "intervene.max_new_tokens": 32,
    },
    "smoke": {
        "responses.dataset": "smoke_qa",
        "responses.n_questions": 48,
        "responses.screen": True,
        "responses.k": 2,
        "responses.temperature": 0.5,
        "responses.max_new_tokens": 16,
        "responses.min_per_class": 2,
        "responses.batch_size": 48,
        "probe.n_Cs": 4,
        "probe.suppression_questions": 8,
        "probe.suppression_max_new_tokens": 12,
        "probe.stability_resamples": 2,
        "detect.sets": ["smoke", "nonexist"],
        "detect.n_questions": 16,
        "detect.temperature": 0.0,
        "detect.max_new_tokens": 16,
        "detect.min_per_class": 1,
        "detect.random_draws": 3,
        "detect.n_boot": 100,
        "intervene.benchmarks": ["falseqa", "faitheval", "sycophancy", "jailbreak"],  # no qa: golden fixture
        "intervene.n_items": 3,
        "intervene.alphas": [0.0, 1.0, 3.0],
        "intervene.random_seeds": 1,
        "intervene.max_new_tokens": 16,
    },
}


def _owner(cfg: Config, key: str) -> tuple[Any, str]:
    """The dataclass that holds ``section.key`` (or a top-level key) and the field's name; unknown → ConfigError."""
    parts = key.split(".")
    obj: Any = cfg
    for p in parts[:-1]:
        if not dataclasses.is_dataclass(obj) or p not in {f.name for f in dataclasses.fields(obj)}:
            raise ConfigError(f"unknown config section {p!r} in {key!r}; sections: model, responses, features, probe, detect, intervene, origin")
        obj = getattr(obj, p)
    fields = {f.name for f in dataclasses.fields(obj)}
    name = parts[-1]
    if name not in fields:
        raise ConfigError(f"unknown config key {key!r}; valid keys here: {', '.join(sorted(fields))}")
    return obj, name


def get_key(cfg: Config, key: str) -> Any:
    """The value of one ``section.key`` (or top-level key), as :func:`set_key` names it."""
    obj, name = _owner(cfg, key)
    return getattr(obj, name)


def set_key(cfg: Config, key: str, value: Any) -> None:
    """Set one ``section.key`` (or top-level key) from a string or TOML value, coerced to its type."""
    obj, name = _owner(cfg, key)
    hints = typing.get_type_hints(type(obj))
    setattr(obj, name, coerce(value, hints[name], key))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["section.key=value", ...]`` (the CLI's ``--set``) as a dict; later items win."""
    parsed = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set responses.k=5")
        k, v = item.split("=", 1)
        parsed[k.strip()] = v.strip()
    return parsed


def load_config(
    preset: str = "default",
    file: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> Config:
    """Build a config: preset, then a TOML file, then ``key=value`` overrides (later wins)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = Config()
    for k, v in copy.deepcopy(PRESETS[preset]).items():
        set_key(cfg, k, v)
    from_file: dict[str, Any] = {}
    if file is not None:
        p = Path(file)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML ({exc})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {p} cannot be read ({type(exc).__name__}); pass a UTF-8 TOML file") from None
        from_file = _flatten(data)
        for k, v in from_file.items():
            try:
                set_key(cfg, k, v)
            except ConfigError as exc:
                raise ConfigError(f"config file {p}: {exc}") from None
    items = parse_overrides(overrides) if isinstance(overrides, list) else (overrides or {})
    for k, v in items.items():
        set_key(cfg, k, v)
    try:
        validate(cfg)
    except ConfigError as exc:
        # name the file when the bad value came from it (and no --set replaced it)
        key = str(exc).split(" ", 1)[0].rstrip(":")
        if key in from_file and key not in items:
            raise ConfigError(f"config file {file}: {exc}") from None
        raise
    return cfg


def check_guard(alpha: float, abstain_above: float | None) -> None:
    """Refuse guarded-generation options no model call could use (checked before a model loads)."""
    check_alpha(alpha, "--alpha")
    if abstain_above is not None and not (isinstance(abstain_above, (int, float)) and 0.0 <= abstain_above <= 1.0):
        raise ConfigError(f"--abstain-above must be a probability in [0, 1], got {abstain_above!r}")


def validate(cfg: Config) -> None:
    """Reject values no stage could use, with the key and what is allowed.

    Each key's own type, choices and range are declared in :mod:`hneurons.config_sections` and
    checked by :func:`~hneurons.config_keys.check_keys`; what is left here relates keys to each other.
    """
    check_keys(cfg)
    r = cfg.responses
    if r.min_agree is not None and not (r.k // 2 < r.min_agree <= r.k):
        raise ConfigError(f"responses.min_agree must be in ({r.k // 2}, {r.k}] for k={r.k}, got {r.min_agree}")
    if cfg.spans.method == "llm" and not (cfg.spans.llm_url and cfg.spans.llm_model):
        raise ConfigError('spans.method = "llm" needs spans.llm_url and spans.llm_model (an OpenAI-compatible server)')
    for a in cfg.intervene.alphas:
        check_alpha(a, "intervene.alphas")
