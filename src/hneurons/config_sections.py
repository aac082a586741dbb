"""The sections of :class:`Config`: every ``section.key``, its type, default, allowed values and meaning.

Why pydantic dataclasses: the one declaration of a key is also its documentation and its check.
``Field(description=...)`` is what ``hneurons config show`` prints beside the key, ``Literal[...]``
and ``Field(ge=...)`` are what :func:`hneurons.config.load_config` enforces (a bad value becomes
one :class:`~hneurons.errors.ConfigError` line naming the key, the value and what is allowed), and
the classes stay standard dataclasses, so ``dataclasses.asdict`` (the manifest and every stage's
input fingerprint) gives the same dicts as before. Rules that relate two keys (``responses.min_agree``
against ``responses.k``, ``spans.method = "llm"`` needing a server) are checked in
:func:`hneurons.config.validate`. The defaults are the paper's (arXiv 2512.01797, §6).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

PAPER_SUFFIX = "Respond with the answer only, without any explanation."
REFUSAL_PHRASES = ["don't know", "cannot", "not provided", "no information"]


@dataclass
class ModelConfig:
    """The model under study and how prompts are rendered for it."""

    name: str | None = Field(None, description="HF model directory, .gguf file or hub name; None → $HNEURONS_MODEL "
                                                "or the embedded SmolLM2-135M-Instruct")
    dtype: str = Field("auto", description="weights dtype: auto | float32 | bfloat16 | float16")
    device: str = Field("auto", description="torch device (auto = CUDA when present, else CPU)")
    device_map: str | None = Field(None, description="accelerate device_map for models larger than one device")
    trust_remote_code: bool = Field(False, description="let the model folder's own Python code run (caller only)")
    # a model without a chat template falls back to plain with a warning (pipeline.resolve_prompt_format)
    prompt_format: Literal["chat", "plain"] = Field(
        "chat", description="chat: the tokenizer's template (a model without one falls back to plain); "
                            "plain: f'{q}\\nAnswer:' (paper §6.3.1)")


@dataclass
class ResponsesConfig:
    """Sampling, judging and balancing the training questions (paper §3.1)."""

    dataset: str = Field("triviaqa_dev", description="training pool (DPR dev ⊂ TriviaQA train)")
    path: str | None = Field(None, description="a user's own copy of the pool (e.g. rc.nocontext parquet)")
    n_questions: int = Field(10_000, ge=1, description="first N questions of the pool, as the official code")
    suffix: str = Field(PAPER_SUFFIX, description="instruction appended to every question")
    k: int = Field(10, ge=1, description="samples per question")
    temperature: float = Field(1.0, description="sampling temperature of the K samples")
    top_k: int = Field(50, description="top-k sampling cut-off")
    top_p: float = Field(0.9, description="nucleus sampling cut-off")
    max_new_tokens: int = Field(50, description="longest sampled answer, in tokens")
    min_agree: int | None = Field(None, description="samples that must agree for a consistent question; "
                                                    "None → all k (paper)")
    screen: bool = Field(False, description="greedy pass first; sample K only for questions the classes still need")
    screen_max_candidates: int = Field(0, description="screened candidates per class (0 = no cap)")
    backend: Literal["hf", "vllm", "openai"] = Field("hf", description="sampling engine")
    backend_url: str | None = Field(None, description="OpenAI-compatible server for backend = openai (caller only)")
    backend_model: str | None = Field(None, description="model name on that server")
    batch_size: int = Field(64, description="prompts generated together")
    judge: Literal["rule", "llm"] = Field("rule", description="judge of correct vs wrong answers")
    judge_url: str | None = Field(None, description="OpenAI-compatible server for judge = llm (caller only)")
    judge_model: str | None = Field(None, description="model name on the judge server")
    refusal_phrases: list[str] = Field(default_factory=lambda: list(REFUSAL_PHRASES),
                                       description="phrases that make an answer a refusal (left out of both classes)")
    per_class: int = Field(1000, description="training questions per class (paper 1,000)")
    heldout_fraction: float = Field(0.2, ge=0, lt=1, description="share of the balanced consistent questions kept "
                                                                 "out of training, for choosing C")
    min_per_class: int = Field(20, description="fewest questions per class before the stage refuses to go on")


@dataclass
class FeaturesConfig:
    """CETT feature extraction (paper §3.2)."""

    other_scope: Literal["full_sequence", "response_only"] = Field(
        "full_sequence", description="the 'other' region: everything but the answer (official) or the response only")
    prompt_region: bool = Field(False, description="also store the mean over prompt tokens")
    batch_size: int = Field(16, description="sequences per forward pass")
    store_dtype: Literal["float16", "float32"] = Field("float16", description="dtype of the stored feature matrix")


@dataclass
class ProbeConfig:
    """The L1 probe, its C path and the rule that picks C (paper §3.3)."""

    mode: Literal["3-vs-1", "1-vs-1"] = Field("3-vs-1", description="training rows: answer rows plus every "
                                                                    "response's other-token rows as class 0, or "
                                                                    "answer rows only")
    Cs: list[float] | None = Field(None, description="the C path; None → a grid relative to the data's C_min")
    n_Cs: int = Field(8, description="points on the C grid")
    standardize: bool = Field(False, description="standardise features before fitting")
    suppression_questions: int = Field(200, description="TriviaQA questions answered with the H-Neurons at α = 0 "
                                                        "for the C rule (0 = off)")
    suppression_max_new_tokens: int = Field(32, description="longest answer in the suppression check, in tokens")
    stability_resamples: int = Field(10, description="bootstrap refits for the stability of the chosen neurons")
    solver: Literal["auto", "newton_cd", "liblinear"] = Field("auto", description="L1 logistic-regression solver "
                                                                                  "(liblinear = the reference)")
    # C rules beside the paper's (issue 31 item 5); with compare_rules every rule is recorded in probe/rules.json
    c_rule: Literal["paper", "cv1se", "stability"] = Field("paper", description="the rule that picks C and with it "
                                                                                "the H-Neurons")
    compare_rules: bool = Field(True, description="also compute the other C rules (probe/rules.json)")
    cv_folds: int = Field(5, description="cross-validation folds of the cv1se rule")
    stability_subsamples: int = Field(20, description="half-samples of the stability rule")
    stability_pi: float = Field(0.6, description="selection frequency a neuron needs under the stability rule")
    stability_ev_max: float = Field(1.0, description="expected false selections the stability rule allows")
    suppression_min_correct: int = Field(10, description="correct answers needed before cv1se counts the "
                                                         "suppression term")
    backend: Literal["numpy", "torch", "torch-cpu", "auto"] = Field(
        "auto", description="solver engine: auto = torch on CUDA when present and the matrix fits, else numpy")


@dataclass
class DetectConfig:
    """Hallucination detection on held-out sets against baselines (paper §4)."""

    sets: list[str] = Field(default_factory=lambda: ["triviaqa", "nq_open", "bioasq", "nonexist"],
                            description="evaluation sets")
    n_questions: int = Field(2000, ge=1, description="questions sampled per set before balancing")
    nonexist_questions: int | None = Field(None, ge=1, description="size of the constructed NonExist set; "
                                                                   "None → n_questions")
    # each risk-coverage item needs its own feature pass, while the balanced detection set is featurised anyway
    risk_coverage_items: int = Field(0, ge=0, description="held-out TriviaQA items for selective answering "
                                                          "(0 = every judged item)")
    per_class: int = Field(1000, description="items per class after balancing")
    min_per_class: int = Field(10, description="fewest items per class for a set to be evaluated")
    temperature: float = Field(1.0, description="answer temperature (0 → greedy)")
    max_new_tokens: int = Field(50, description="longest answer, in tokens")
    random_draws: int = Field(20, description="random neuron sets of the same size, as a baseline")
    n_boot: int = Field(1000, description="bootstrap resamples for confidence intervals")


@dataclass
class InterveneConfig:
    """Scaling the H-Neurons by α and measuring compliance (paper §5)."""

    benchmarks: list[str] = Field(
        default_factory=lambda: ["falseqa", "faitheval", "sycophancy", "jailbreak", "qa"],
        description="benchmarks to run; qa = held-out QA/NonExist answers under α (intervene/qa.json)")
    alphas: list[float] = Field(default_factory=lambda: [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0],
                                description="scale factors α (1 = no change, 0 = silence the neurons)")
    n_items: int = Field(0, description="items per benchmark (0 = all; for qa per set, 0 → 500)")
    random_seeds: int = Field(3, description="random neuron sets as controls")
    faitheval_path: str | None = Field(None, description="the real FaithEval counterfactual file, if you have it")
    # known_correct: compliance only counts items the model first answered correctly
    sycophancy_source: Literal["random", "known_correct"] = Field(
        "random", description="sycophancy items: random held-out TriviaQA questions, or those the model answered "
                              "correctly in detect")
    max_new_tokens: int | None = Field(None, description="longest answer, in tokens; None → each benchmark's "
                                                         "paper setting")
    method: Literal["hook", "weights"] = Field("hook", description="scale the activations (hook) or the W_down "
                                                                   "columns (weights)")
    judge: Literal["rule", "llm"] = Field("rule", description="judge of the benchmark answers")
    judge_url: str | None = Field(None, description="OpenAI-compatible server for judge = llm (caller only)")
    judge_model: str | None = Field(None, description="model name on the judge server")
    backend: Literal["hf", "vllm", "openai"] = Field("hf", description="generation engine; openai = servers of "
                                                                       "`hneurons edit-model` checkpoints")
    backend_url: str | None = Field(None, description="server URL for backend = openai, with {alpha} and "
                                                      "{condition} (caller only)")
    backend_model: str | None = Field(None, description="model name on those servers")


@dataclass
class OriginConfig:
    """Where the neurons come from: base model and training checkpoints (paper §6)."""

    base_model: str | None = Field(None, description="the instruct model's base checkpoint; None → stage not run "
                                                     "(caller only)")
    sets: list[str] = Field(default_factory=lambda: ["triviaqa", "nq_open", "bioasq"],
                            description="sets for the base model's transfer AUROC")
    n_questions: int = Field(1000, description="questions per set")
    permutations: int = Field(10_000, description="permutations of the drift test")
    drift_scope: Literal["global", "per_layer"] = Field("global", description="z-score the drift over all neurons "
                                                                              "or within each layer")
    checkpoints: list[str] = Field(default_factory=list,
                                   description="training checkpoints (directories or REPO@REVISION in the HF "
                                               "cache): drift and transfer per checkpoint; [] → not run")


@dataclass
class SpansConfig:
    """Which tokens of a response are its answer (one rule for every stage and for ``score``)."""

    method: Literal["phrase", "response", "llm", "alias"] = Field(
        "phrase", description="phrase | response | llm (label-blind) · alias (leaks the label; parity only)")
    llm_url: str | None = Field(None, description="OpenAI-compatible server for method = llm (caller only)")
    llm_model: str | None = Field(None, description="model name on that server")


@dataclass
class Config:
    """The whole configuration: a seed, an optional time budget and one section per stage (and ``model``, ``spans``)."""

    seed: int = Field(0, description="seed of every random choice: sampling, splits, random neuron sets")
    budget_minutes: float | None = Field(None, gt=0, description="fit `hneurons run` into this many minutes: a timing at "
                                         "the start shrinks the generating stages' sizes; None: as configured")
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    responses: ResponsesConfig = dataclasses.field(default_factory=ResponsesConfig)
    spans: SpansConfig = dataclasses.field(default_factory=SpansConfig)
    features: FeaturesConfig = dataclasses.field(default_factory=FeaturesConfig)
    probe: ProbeConfig = dataclasses.field(default_factory=ProbeConfig)
    detect: DetectConfig = dataclasses.field(default_factory=DetectConfig)
    intervene: InterveneConfig = dataclasses.field(default_factory=InterveneConfig)
    origin: OriginConfig = dataclasses.field(default_factory=OriginConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (what the manifest records)."""
        return dataclasses.asdict(self)

    def section(self, name: str) -> dict[str, Any]:
        """One section as a dict, for stage input fingerprints."""
        return dataclasses.asdict(getattr(self, name))


TOP_LEVEL_KEYS = tuple(f.name for f in dataclasses.fields(Config) if f.default_factory is dataclasses.MISSING)
"""The keys of :class:`Config` outside any section (``seed``, ``budget_minutes``)."""
