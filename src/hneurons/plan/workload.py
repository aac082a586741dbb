"""How much model work each stage does under a config: generations, tokens, forwards, stored rows.

Every count follows the stage code and the preset's sizes (``hneurons.config.PRESETS`` over the
dataclass defaults). Counts of generated tokens are **upper bounds**: every generation is counted
at its ``max_new_tokens``, and a screened responses stage is counted as if every question were
sampled K times (how many are depends on the model's accuracy, which a plan cannot know). The
class sizes are the ones the config asks for (``per_class``); a model that answers too few
questions consistently gets smaller ones. Prompt lengths are estimates, listed in
:data:`PROMPT_TOKENS` with how they were obtained.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hneurons.config import Config

# Questions each packaged pool holds after de-duplication (tests check them against the loaders).
POOL_SIZES = {"triviaqa_dev": 8837, "triviaqa_test": 11313, "nq_open": 3610, "bioasq": 738,
              "smoke_qa": 80, "smoke_heldout": 40, "falseqa_false_premise": 687, "jailbreak": 390}
DETECT_POOLS = {"triviaqa": "triviaqa_test", "nq_open": "nq_open", "bioasq": "bioasq", "smoke": "smoke_heldout"}
CONSTRUCTED_DEFAULT = 1000  # items of a constructed benchmark when intervene.n_items = 0
# Benchmarks: (pool size or None for constructed, paper max_new_tokens, generations per item ≤)
BENCHMARKS = {"falseqa": (POOL_SIZES["falseqa_false_premise"], 256, 1), "faitheval": (None, 256, 1),
              "sycophancy": (None, 512, 4), "jailbreak": (POOL_SIZES["jailbreak"], 256, 1),
              # qa: n_items per set (0 → 500, intervention.qa.QA_PER_SET_DEFAULT), one answer in each of 4 sets
              "qa": (500, 50, 4)}
# Prompt tokens, estimates: QA from 48 packaged TriviaQA questions + suffix + a short answer in
# SmolLM2's chat template (2,989 tokens, benchmarks/extraction.py on 2026-12-06, so ~55 without the
# answer); the rest from mean characters / 4 (jailbreak: template 2,965 + question 77 characters;
# FalseQA 48 characters + template), FaithEval and sycophancy from their prompt layouts.
PROMPT_TOKENS = {"qa": 55, "falseqa": 40, "faitheval": 250, "sycophancy": 110, "jailbreak": 780}
ANSWER_TOKENS = 8  # a short answer, for feature passes over finished responses (estimate)


@dataclass
class Work:
    """One stage's model work. ``*_tokens`` count tokens; ``prefill`` is prompt tokens read."""

    generations: int = 0
    new_tokens: int = 0  # ≤: each generation at max_new_tokens
    prefill: int = 0  # prompt tokens read by generation (estimate)
    forwards: int = 0  # sequences read once with the CETT hooks
    forward_tokens: int = 0
    store_rows: int = 0  # feature rows written to the store (one per sequence)
    batch: int = 1
    seq_len: int = 0  # longest typical sequence (prompt + new tokens), for the KV cache
    probe_rows: int = 0
    suppression: int = 0  # greedy generations of the C rule (hook engine)
    notes: list[str] = field(default_factory=list)

    def generate(self, n: int, prompt: int, max_new: int) -> None:
        """Add ``n`` generations of a ``prompt``-token prompt, up to ``max_new`` new tokens each."""
        self.generations += n
        self.new_tokens += n * max_new
        self.prefill += n * prompt
        self.seq_len = max(self.seq_len, prompt + max_new)

    def read(self, n: int, tokens_each: int, store: bool = True) -> None:
        """Add ``n`` hooked forwards of ``tokens_each`` tokens (and their feature rows)."""
        self.forwards += n
        self.forward_tokens += n * tokens_each
        self.store_rows += n if store else 0
        self.seq_len = max(self.seq_len, tokens_each)


def _class_sizes(cfg: Config) -> tuple[int, int]:
    """(training, held-out) questions per class when the classes are as large as ``per_class`` asks."""
    r = cfg.responses
    n_train = r.per_class
    held = round(n_train * r.heldout_fraction / (1 - r.heldout_fraction)) if n_train >= 4 else 0
    return n_train, held


def responses(cfg: Config) -> Work:
    """K samples per question (screened: a greedy pass first); upper bound: every question sampled."""
    r = cfg.responses
    w = Work(batch=r.batch_size)
    n = min(r.n_questions, POOL_SIZES.get(r.dataset, r.n_questions))
    if r.screen:
        w.generate(n, PROMPT_TOKENS["qa"], r.max_new_tokens)
        w.notes.append("screened: greedy pass, then K samples for the questions the classes need (bound: all)")
    w.generate(n * r.k, PROMPT_TOKENS["qa"], r.max_new_tokens)
    return w


def features(cfg: Config) -> Work:
    """One hooked forward per labelled response of the training and held-out splits."""
    n_train, held = _class_sizes(cfg)
    w = Work(batch=cfg.features.batch_size)
    w.read(2 * (n_train + held), PROMPT_TOKENS["qa"] + ANSWER_TOKENS)
    return w


def probe(cfg: Config) -> Work:
    """3-vs-1 rows (answer and other row per training question), and the C rule's suppressed answers."""
    n_train, _ = _class_sizes(cfg)
    p = cfg.probe
    w = Work(batch=cfg.responses.batch_size, probe_rows=(4 if p.mode == "3-vs-1" else 2) * n_train)
    if p.suppression_questions > 0:
        # unsuppressed baseline + one pass per distinct H-Neuron set on the path (≤ n_Cs)
        passes = 1 + (len(p.Cs) if p.Cs else p.n_Cs)
        w.generate(passes * p.suppression_questions, PROMPT_TOKENS["qa"], p.suppression_max_new_tokens)
        w.suppression = passes * p.suppression_questions
    return w


def _detect_questions(cfg: Config, name: str) -> int:
    d = cfg.detect
    if name == "nonexist":
        return d.nonexist_questions or d.n_questions
    return min(d.n_questions, POOL_SIZES.get(DETECT_POOLS.get(name, ""), d.n_questions))


def detect(cfg: Config) -> Work:
    """One answer per question of each set; hooked forwards on the balanced items (+ risk–coverage)."""
    d = cfg.detect
    w = Work(batch=cfg.responses.batch_size)
    for name in d.sets:
        n = _detect_questions(cfg, name)
        w.generate(n, PROMPT_TOKENS["qa"], d.max_new_tokens)
        w.read(min(n, 2 * d.per_class), PROMPT_TOKENS["qa"] + ANSWER_TOKENS)
    if "triviaqa" in d.sets:
        n = _detect_questions(cfg, "triviaqa")
        extra = max(0, min(n, d.risk_coverage_items or n) - min(n, 2 * d.per_class))
        w.read(extra, PROMPT_TOKENS["qa"] + ANSWER_TOKENS)
    return w


def intervene(cfg: Config) -> Work:
    """Every benchmark item at every α under the H-Neurons and each random set (α = 1 once)."""
    iv = cfg.intervene
    w = Work(batch=cfg.responses.batch_size)
    scaled = [a for a in iv.alphas if float(a) != 1.0]
    runs = len(scaled) * (1 + iv.random_seeds) + (1 if len(scaled) < len(iv.alphas) else 0)
    for name in iv.benchmarks:
        pool, max_new, per_item = BENCHMARKS.get(name, (None, 256, 1))
        size = pool if pool is not None else CONSTRUCTED_DEFAULT
        items = min(iv.n_items, size) if iv.n_items > 0 else size
        w.generate(runs * items * per_item, PROMPT_TOKENS.get(name, PROMPT_TOKENS["qa"]), iv.max_new_tokens or max_new)
    w.notes.append(f"{runs} runs per item: {len(scaled)} α ≠ 1 × (H + {iv.random_seeds} random) + α = 1 once")
    return w


def origin(cfg: Config) -> Work:
    """The base model answers each origin set; hooked forwards on its balanced items."""
    o, d = cfg.origin, cfg.detect
    w = Work(batch=cfg.responses.batch_size)
    for name in o.sets:
        n = min(o.n_questions, POOL_SIZES.get(DETECT_POOLS.get(name, ""), o.n_questions))
        w.generate(n, PROMPT_TOKENS["qa"] - 20, d.max_new_tokens)  # plain prompt: no chat template
        w.read(min(n, 2 * d.per_class), PROMPT_TOKENS["qa"] - 20 + ANSWER_TOKENS)
    if o.base_model is None:
        w.notes.append("runs only with --set origin.base_model=PATH (not set in this config)")
    return w


STAGE_WORK = {"responses": responses, "features": features, "probe": probe, "detect": detect,
              "intervene": intervene, "origin": origin}


def stage_work(cfg: Config) -> dict[str, Work]:
    """Work of every stage under ``cfg``, in pipeline order."""
    return {name: fn(cfg) for name, fn in STAGE_WORK.items()}
