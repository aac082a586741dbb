"""``hneurons plan``: what a run of a preset on a model will cost, before anything is loaded.

From the model's ``config.json`` alone (:mod:`hneurons.plan.model`) and a preset's sizes
(:mod:`hneurons.plan.workload`), :func:`make_plan` gives per stage the neurons, tokens generated
and read, feature-store bytes, probe RAM, peak GPU memory, the engine that runs it and a time
estimate with the source of its figure (:mod:`hneurons.plan.costs`). Why: a 70B run costs GPU
days when planned badly (a hook engine at a few tokens per second, weights that do not fit), and
every number it needs is known before the weights are downloaded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from hneurons.config import load_config
from hneurons.plan import costs
from hneurons.plan.model import ModelSpec, model_spec
from hneurons.plan.workload import PROMPT_TOKENS, Work, stage_work

__all__ = ["Plan", "StagePlan", "make_plan"]

HOOK_STAGES = {"features", "probe", "intervene", "origin"}  # generation needs the CETT / α hooks


@dataclass
class StagePlan:
    """One stage's row: work, engine, memory and time (``time_source`` names the figure used)."""

    stage: str
    engine: str
    generations: int
    new_tokens: int
    forwards: int
    tokens_read: int
    store_bytes: int
    probe_ram: int
    peak_gpu_bytes: float
    seconds: float | None
    time_source: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """Everything ``hneurons plan`` prints (``--json`` writes :meth:`to_dict`)."""

    model: ModelSpec
    preset: str
    gpus: int
    gpu_mem_gb: float
    placement: costs.Placement
    stages: list[StagePlan]
    notes: list[str]

    @property
    def total_seconds(self) -> float | None:
        """Sum of the stage estimates (None when a stage has none, e.g. an external server)."""
        secs = [s.seconds for s in self.stages]
        return None if any(s is None for s in secs) else sum(secs)  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: model facts, placement, stages, sources of every figure, notes."""
        m = self.model
        return {
            "model": {**asdict(m), "widths": None, "n_neurons": m.n_neurons, "n_flat": m.n_flat,
                      "neurons_per_layer": _per_layer(m), "weight_bytes_bf16": m.weight_bytes},
            "preset": self.preset, "gpus": self.gpus, "gpu_mem_gb": self.gpu_mem_gb,
            "placement": {"hf_gpus_per_copy": self.placement.hf_span, "hf_copies": self.placement.hf_copies,
                          "vllm_tp": self.placement.vllm_tp, "vllm_copies": self.placement.vllm_copies},
            "stages": [asdict(s) for s in self.stages], "total_seconds": self.total_seconds,
            "sources": [asdict(s) for s in (*costs.CPU_MEASURED, *costs.GPU_PUBLISHED, costs.H100, costs.HF_EAGER)],
            "notes": self.notes,
        }


def _per_layer(m: ModelSpec) -> list[dict[str, int]]:
    """Runs of equal width: ``[{"layers": 48, "neurons": 98304}]`` (MoE: experts × width + shared)."""
    runs: list[dict[str, int]] = []
    for w in m.widths:
        if runs and runs[-1]["neurons"] == w:
            runs[-1]["layers"] += 1
        else:
            runs.append({"layers": 1, "neurons": w})
    return runs


def _engine_name(kind: str, p: costs.Placement) -> str:
    """Human form of an engine on the placed hardware."""
    if kind == "openai":
        return "openai server (external)"
    if p.gpus == 0:
        return "vllm (needs a GPU)" if kind == "vllm" else "hf, CPU"
    if kind == "vllm":
        if not p.vllm_tp:
            return f"vllm: does not fit {p.gpus} GPU(s)"
        return f"vllm tp={p.vllm_tp}" + (f" × {p.vllm_copies} (data parallel)" if p.vllm_copies > 1 else "")
    if not p.hf_span:
        return f"hf: does not fit {p.gpus} GPU(s)"
    base = "hf, 1 GPU" if p.hf_span == 1 else f"hf, device_map over {p.hf_span} GPUs"
    return base + (f" × {p.hf_copies} (data parallel)" if p.hf_copies > 1 else "")


def _generation(spec: ModelSpec, kind: str, w: Work, p: costs.Placement) -> tuple[float | None, float, str]:
    """(seconds, peak bytes per GPU, source key) of a stage's generations on ``kind``."""
    if w.generations == 0:
        return 0.0, 0.0, ""
    if kind == "openai":
        return None, 0.0, "external server"
    if p.gpus == 0:
        # the measured sampling rate already includes prefilling QA-length prompts; longer ones add the rest
        extra = max(0, w.prefill - w.generations * PROMPT_TOKENS["qa"]) / costs.cpu_rate(spec, "cpu_forward")
        time = w.new_tokens / costs.cpu_rate(spec, "cpu_sampling") + extra
        return time, costs.hf_generation_memory(spec, w, 1), "cpu_sampling"
    copies = p.vllm_copies if kind == "vllm" else p.hf_copies
    if copies == 0:
        return None, float("inf"), "does not fit"
    rate, key = costs.gpu_decode_rate(spec, kind, p, w.batch)
    # prompts: compute-bound on every GPU of a tensor-parallel engine, on one at a time of a device_map copy
    busy = p.vllm_tp * p.vllm_copies if kind == "vllm" else p.hf_copies
    prefill = costs.gpu_forward_rate(spec, busy)
    mem = 0.9 * p.gpu_mem if kind == "vllm" else costs.hf_generation_memory(spec, w, p.hf_span)
    return w.new_tokens / rate + w.prefill / prefill, mem, key


def _forward(spec: ModelSpec, w: Work, p: costs.Placement, regions: int) -> tuple[float | None, float, str]:
    """(seconds, peak bytes per GPU, source key) of a stage's hooked forwards (always the hf engine)."""
    if w.forwards == 0:
        return 0.0, 0.0, ""
    if p.gpus == 0:
        return w.forward_tokens / costs.cpu_rate(spec, "cpu_forward"), costs.hf_forward_memory(spec, w, 1, regions), "cpu_forward"
    if p.hf_copies == 0:
        return None, float("inf"), "does not fit"
    rate = costs.gpu_forward_rate(spec, p.hf_copies)  # a device_map copy computes on one GPU at a time
    return w.forward_tokens / rate, costs.hf_forward_memory(spec, w, p.hf_span, regions), "h100_datasheet"


def _engines(name: str, kind: str, w: Work, p: costs.Placement) -> str:
    """What runs the stage: the generation engine, the hooked forwards, the CPU probe fit."""
    parts = []
    if name == "probe":
        parts.append("L1 fit: CPU (numpy)")
    if w.generations:
        parts.append(("suppression: " if name == "probe" else "") + _engine_name(kind, p))
    if w.forwards:
        parts.append(_engine_name("hf", p) + (" (hooked forwards)" if w.generations and kind != "hf" else ""))
    return "; ".join(dict.fromkeys(parts))


def _probe_paths(pr: Any) -> int:
    """C paths the probe stage fits: the paper's rule, plus cv1se's folds and stability's subsamples when
    that rule picks the neurons or ``probe.compare_rules`` computes it beside the chosen one."""
    extra = {"cv1se": pr.cv_folds, "stability": pr.stability_subsamples}
    return 1 + sum(n for rule, n in extra.items() if pr.compare_rules or pr.c_rule == rule)


def _stage(name: str, spec: ModelSpec, cfg: Any, w: Work, p: costs.Placement, kind: str) -> StagePlan:
    """Combine a stage's generations (on ``kind``), hooked forwards and probe fit into its row."""
    regions = 3 if cfg.features.prompt_region else 2
    width = 2 if cfg.features.store_dtype == "float16" else 4
    g_s, g_mem, g_key = _generation(spec, kind, w, p)
    f_s, f_mem, f_key = _forward(spec, w, p, regions)
    probe_s = 0.0
    if name == "probe":
        pr = cfg.probe
        probe_s = costs.probe_seconds(w.probe_rows, spec.n_flat, len(pr.Cs) if pr.Cs else pr.n_Cs, _probe_paths(pr),
                                      pr.stability_resamples)
    seconds = None if g_s is None or f_s is None else g_s + f_s + probe_s
    keys = [k for k in (g_key, f_key, "cpu_probe_path" if name == "probe" else "") if k]
    return StagePlan(
        stage=name, engine=_engines(name, kind, w, p), generations=w.generations, new_tokens=w.new_tokens,
        forwards=w.forwards, tokens_read=w.prefill + w.forward_tokens, store_bytes=w.store_rows * spec.n_flat * regions * width,
        probe_ram=costs.probe_ram(w.probe_rows, spec.n_flat, width), peak_gpu_bytes=max(g_mem, f_mem) if p.gpus else 0.0,
        seconds=seconds, time_source=", ".join(dict.fromkeys(keys)), notes=list(w.notes))


def _vllm_hint(spec: ModelSpec, cfg: Any, work: dict[str, Work], p: costs.Placement) -> list[str]:
    """On GPUs with the hf sampler configured: what the sampling stages would take on vLLM."""
    if not p.gpus or cfg.responses.backend != "hf" or not p.vllm_tp:
        return []
    alt = {n: _stage(n, spec, cfg, work[n], p, "vllm").seconds for n in ("responses", "detect")}
    return ["with --set responses.backend=vllm (" + _engine_name("vllm", p) + "): "
            + ", ".join(f"{n} ≈ {s / 60:.1f} min" for n, s in alt.items() if s is not None)
            + " (generation only; detect's hooked forwards stay on hf)"]


def make_plan(model: str, preset: str = "paper", gpus: int = 0, gpu_mem_gb: float = 80.0,
              overrides: list[str] | None = None) -> Plan:
    """The plan of ``preset`` (with ``section.key=value`` overrides) for ``model`` (a config.json,
    a directory, or a cached hub id)."""
    from hneurons.errors import ConfigError

    if gpus < 0 or gpu_mem_gb <= 0:
        raise ConfigError(f"--gpus must be ≥ 0 and --gpu-mem > 0, got {gpus} and {gpu_mem_gb}")
    cfg = load_config(preset, overrides=list(overrides or []))
    spec = model_spec(model)
    p = costs.place(spec, gpus, gpu_mem_gb)
    work = stage_work(cfg)
    stages = [_stage(name, spec, cfg, w, p, "hf" if name in HOOK_STAGES else cfg.responses.backend)
              for name, w in work.items()]
    notes = ["Token counts are upper bounds (every generation at max_new_tokens); prompt lengths and every time "
             "are estimates: CPU times scale this machine's measurements by parameters, GPU times scale published "
             "vLLM throughput or derive from the H100 datasheet; none was checked on a GPU run of hneurons."]
    if p.hf_copies > 1:
        notes.append(f"hf × {p.hf_copies} assumes one process per model copy (torchrun --nproc-per-node); "
                     "a single process runs one copy, so its hf times are that many times longer.")
    over = [s.stage for s in stages if p.gpus and math.isfinite(s.peak_gpu_bytes) and s.peak_gpu_bytes > p.gpu_mem]
    if over:
        notes.append(f"peak memory of {', '.join(over)} exceeds {gpu_mem_gb:g} GB per GPU: lower the batch sizes "
                     "(responses.batch_size, features.batch_size) or add GPUs")
    if cfg.budget_minutes is not None:
        notes.append(f"budget_minutes = {cfg.budget_minutes:g}: a run times its sampler first and, where these sizes "
                     "would take longer, answers proportionally fewer questions (--set budget_minutes=none: as planned)")
    if gpus and not p.hf_span:
        notes.append(f"the bf16 weights ({spec.weight_bytes / costs.GB:.0f} GB) do not fit {gpus} × {gpu_mem_gb:g} GB "
                     "(80 % of each GPU for weights); add GPUs")
    return Plan(spec, preset, gpus, gpu_mem_gb, p, stages, _vllm_hint(spec, cfg, work, p) + notes)
