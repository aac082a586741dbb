"""Typed configuration with presets, TOML files and ``--set section.key=value`` overrides.

One parameter travels CLI → config → stage → hook unchanged: every stage reads its own section
of :class:`Config`, and the fully resolved config is written to the run manifest, so a run can be
repeated from its manifest alone.

Presets:

* ``paper`` — the paper's sizes and settings (the paper, arXiv 2512.01797, §6): 10,000 questions, K = 10 at T = 1.0,
  all 10 samples must agree, 1,000 + 1,000 training questions. Needs a GPU and hours.
* ``default`` — the README's main job on the embedded 135M model on 2 CPU cores (38 min measured).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hneurons.config_keys import KeyInfo as KeyInfo, coerce
from hneurons.config_keys import describe as describe
from hneurons.core.alpha import check_alpha
from hneurons.errors import ConfigError

PAPER_SUFFIX = "Respond with the answer only, without any explanation."


@dataclass
class ModelConfig:
    name: str | None = None  # None → $HNEURONS_MODEL or the embedded SmolLM2-135M-Instruct
    dtype: str = "auto"
    device: str = "auto"
    device_map: str | None = None
    trust_remote_code: bool = False
    # "chat": the tokenizer's template; a model without one (a base model) falls back to "plain"
    # with a warning (pipeline.resolve_prompt_format). "plain": f"{q}\nAnswer:" (the paper, arXiv 2512.01797, §6.3.1)
    prompt_format: str = "chat"


@dataclass
class ResponsesConfig:
    dataset: str = "triviaqa_dev"  # training pool (DPR dev ⊂ TriviaQA train)
    path: str | None = None  # a user's own copy (e.g. rc.nocontext parquet)
    n_questions: int = 10_000  # first N of the pool, as the official code
    suffix: str = PAPER_SUFFIX
    k: int = 10
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 0.9
    max_new_tokens: int = 50
    min_agree: int | None = None  # None → all k samples must agree (paper)
    screen: bool = False  # greedy pass first; sample K only for questions the classes still need
    screen_max_candidates: int = 0  # per class, 0 = no cap
    backend: str = "hf"  # hf | vllm | openai
    backend_url: str | None = None
    backend_model: str | None = None
    batch_size: int = 64
    judge: str = "rule"  # rule | llm
    judge_url: str | None = None
    judge_model: str | None = None
    refusal_phrases: list[str] = field(default_factory=lambda: ["don't know", "cannot", "not provided", "no information"])
    per_class: int = 1000  # training questions per class (paper 1,000)
    heldout_fraction: float = 0.2  # of the balanced consistent questions, kept out of training for choosing C
    min_per_class: int = 20


@dataclass
class FeaturesConfig:
    other_scope: str = "full_sequence"  # official: everything but the answer; or "response_only"
    prompt_region: bool = False  # also store the mean over prompt tokens
    batch_size: int = 16
    store_dtype: str = "float16"


@dataclass
class ProbeConfig:
    mode: str = "3-vs-1"
    Cs: list[float] | None = None  # None → a grid relative to the data's C_min
    n_Cs: int = 8
    standardize: bool = False
    suppression_questions: int = 200  # TriviaQA questions answered with H-Neurons at α = 0 for the C rule (0 = off)
    suppression_max_new_tokens: int = 32
    stability_resamples: int = 10
    solver: str = "auto"
    # C rules beside the paper's (issue 31 item 5): which one picks the H-Neurons, and whether the others are
    # computed too (recorded in probe/rules.json); the suppression term counts in cv1se only with enough correct answers
    c_rule: str = "paper"  # paper | cv1se | stability
    compare_rules: bool = True
    cv_folds: int = 5
    stability_subsamples: int = 20
    stability_pi: float = 0.6
    stability_ev_max: float = 1.0
    suppression_min_correct: int = 10
    backend: str = "auto"  # numpy | torch | torch-cpu | auto (torch on CUDA when present and the matrix fits, else numpy)


@dataclass
class DetectConfig:
    sets: list[str] = field(default_factory=lambda: ["triviaqa", "nq_open", "bioasq", "nonexist"])
    n_questions: int = 2000  # questions sampled per set before balancing
    # the constructed NonExist set has no natural size: None → n_questions
    nonexist_questions: int | None = None
    # selective answering on held-out TriviaQA: the first N judged, located items (0 = all); each
    # needs its own feature pass, while the balanced detection set is featurised anyway
    risk_coverage_items: int = 0
    per_class: int = 1000
    min_per_class: int = 10
    temperature: float = 1.0  # 0 → greedy
    max_new_tokens: int = 50
    random_draws: int = 20
    n_boot: int = 1000


@dataclass
class InterveneConfig:
    # "qa": held-out QA/NonExist answers under α (intervene/qa.json); n_items is per set there (0 → 500)
    benchmarks: list[str] = field(default_factory=lambda: ["falseqa", "faitheval", "sycophancy", "jailbreak", "qa"])
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    n_items: int = 0  # per benchmark, 0 = all
    random_seeds: int = 3
    faitheval_path: str | None = None  # the real FaithEval counterfactual file, if you have it
    # sycophancy items: "random" held-out TriviaQA questions, or "known_correct" = first those the
    # model answered correctly in the detection stage (compliance only counts initially correct items)
    sycophancy_source: str = "random"
    max_new_tokens: int | None = None  # None → each benchmark's paper setting
    method: str = "hook"  # hook | weights
    judge: str = "rule"
    judge_url: str | None = None
    judge_model: str | None = None
    # hf (local hooks) | openai: servers of `hneurons edit-model` checkpoints, URL with {alpha} and {condition}
    backend: str = "hf"
    backend_url: str | None = None
    backend_model: str | None = None


@dataclass
class OriginConfig:
    base_model: str | None = None  # the instruct model's base checkpoint; None → stage not run
    sets: list[str] = field(default_factory=lambda: ["triviaqa", "nq_open", "bioasq"])
    n_questions: int = 1000
    permutations: int = 10_000
    drift_scope: str = "global"  # z-score drift over all neurons, or "per_layer"
    # training checkpoints of the model (directories or REPO@REVISION in the HF cache): drift to the final
    # model and the probe's transfer AUROC per checkpoint (origin/checkpoints.json); [] → not run
    checkpoints: list[str] = field(default_factory=list)


@dataclass
class SpansConfig:
    """Which tokens of a response are its answer (one rule for every stage and for ``score``)."""

    method: str = "phrase"  # phrase | response | llm (label-blind) · alias (leaks the label; parity only)
    llm_url: str | None = None  # OpenAI-compatible server for method = "llm"
    llm_model: str | None = None


@dataclass
class Config:
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    responses: ResponsesConfig = field(default_factory=ResponsesConfig)
    spans: SpansConfig = field(default_factory=SpansConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    intervene: InterveneConfig = field(default_factory=InterveneConfig)
    origin: OriginConfig = field(default_factory=OriginConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (what the manifest records)."""
        return dataclasses.asdict(self)

    def section(self, name: str) -> dict[str, Any]:
        """One section as a dict, for stage input fingerprints."""
        return dataclasses.asdict(getattr(self, name))


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # sized for ≥ 150 + 150 training, ≥ 100 + 100 TriviaQA and ≥ 60 + 60 NQ-Open detection items and 60
    # intervention items with the embedded model (README "The default run, measured": 38 min on 2 cores)
    "default": {
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
        "intervene.alphas": [0.0, 1.0, 2.0, 3.0],
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


def _set(cfg: Config, key: str, value: Any) -> None:
    parts = key.split(".")
    obj: Any = cfg
    for p in parts[:-1]:
        if not dataclasses.is_dataclass(obj) or p not in {f.name for f in dataclasses.fields(obj)}:
            raise ConfigError(f"unknown config section {p!r} in {key!r}; sections: model, responses, features, probe, detect, intervene, origin")
        obj = getattr(obj, p)
    fields = {f.name: f for f in dataclasses.fields(obj)}
    name = parts[-1]
    if name not in fields:
        raise ConfigError(f"unknown config key {key!r}; valid keys here: {', '.join(sorted(fields))}")
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
        _set(cfg, k, v)
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
                _set(cfg, k, v)
            except ConfigError as exc:
                raise ConfigError(f"config file {p}: {exc}") from None
    items = parse_overrides(overrides) if isinstance(overrides, list) else (overrides or {})
    for k, v in items.items():
        _set(cfg, k, v)
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
    """Reject values no stage could use, with the key and what to do."""
    r = cfg.responses
    if r.k < 1:
        raise ConfigError(f"responses.k must be ≥ 1 (samples per question), got {r.k}")
    if r.n_questions < 1:
        raise ConfigError(f"responses.n_questions must be ≥ 1, got {r.n_questions}")
    if r.min_agree is not None and not (r.k // 2 < r.min_agree <= r.k):
        raise ConfigError(f"responses.min_agree must be in ({r.k // 2}, {r.k}] for k={r.k}, got {r.min_agree}")
    if r.backend not in {"hf", "vllm", "openai"}:
        raise ConfigError(f"responses.backend must be hf, vllm or openai, got {r.backend!r}")
    if not 0 <= r.heldout_fraction < 1:
        raise ConfigError(f"responses.heldout_fraction must be in [0, 1), got {r.heldout_fraction}")
    if r.judge not in {"rule", "llm"}:
        raise ConfigError(f"responses.judge must be rule or llm, got {r.judge!r}")
    if cfg.model.prompt_format not in {"chat", "plain"}:
        raise ConfigError(f"model.prompt_format must be chat or plain, got {cfg.model.prompt_format!r}")
    if cfg.spans.method not in {"phrase", "response", "llm", "alias"}:
        raise ConfigError(f"spans.method must be phrase, response, llm or alias, got {cfg.spans.method!r}")
    if cfg.spans.method == "llm" and not (cfg.spans.llm_url and cfg.spans.llm_model):
        raise ConfigError('spans.method = "llm" needs spans.llm_url and spans.llm_model (an OpenAI-compatible server)')
    if cfg.features.other_scope not in {"full_sequence", "response_only"}:
        raise ConfigError(f"features.other_scope must be full_sequence or response_only, got {cfg.features.other_scope!r}")
    if cfg.features.store_dtype not in {"float16", "float32"}:
        raise ConfigError(f"features.store_dtype must be float16 or float32, got {cfg.features.store_dtype!r}")
    if cfg.probe.mode not in {"3-vs-1", "1-vs-1"}:
        raise ConfigError(f"probe.mode must be 3-vs-1 or 1-vs-1, got {cfg.probe.mode!r}")
    if cfg.probe.c_rule not in {"paper", "cv1se", "stability"}:
        raise ConfigError(f"probe.c_rule must be paper, cv1se or stability, got {cfg.probe.c_rule!r}")
    if cfg.probe.backend not in {"numpy", "torch", "torch-cpu", "auto"}:
        raise ConfigError(f"probe.backend must be numpy, torch, torch-cpu or auto, got {cfg.probe.backend!r}")
    d = cfg.detect
    if d.risk_coverage_items < 0:
        raise ConfigError(f"detect.risk_coverage_items must be ≥ 0 (0 = every judged item), got {d.risk_coverage_items}")
    if d.n_questions < 1 or (d.nonexist_questions is not None and d.nonexist_questions < 1):
        raise ConfigError(f"detect.n_questions and detect.nonexist_questions must be ≥ 1, got {d.n_questions} and "
                          f"{d.nonexist_questions}")
    if cfg.intervene.sycophancy_source not in {"random", "known_correct"}:
        raise ConfigError(f"intervene.sycophancy_source must be random or known_correct, got {cfg.intervene.sycophancy_source!r}")
    for a in cfg.intervene.alphas:
        check_alpha(a, "intervene.alphas")
