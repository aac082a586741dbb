"""The plan as text: a header of model facts, one table row per stage, then the sources.

Plain pipe tables (readable in a terminal, pasteable into Markdown) rather than a rich layout, so
the printed plan can go into docs and issues unchanged.
"""

from __future__ import annotations

import math

from hneurons.plan import Plan
from hneurons.plan.costs import CPU_MEASURED, GPU_PUBLISHED, H100, HF_EAGER

_KIND = {"cpu_sampling": "measured here (CPU)", "cpu_forward": "measured here (CPU)",
         "cpu_probe_path": "measured here (CPU)", "vllm_8b_h100": "published vLLM 8B (2024-09)",
         "vllm_70b_4xh100": "published vLLM 70B (2024-09)", "h100_datasheet": "derived (H100 datasheet)",
         "hf_eager_step": "derived (H100 datasheet + eager overhead)",
         "external server": "external server: not estimated", "does not fit": "does not fit"}


def _n(x: float) -> str:
    """Counts: 12,345 below a million, else 1.23 M / 4.56 B."""
    if x < 1e6:
        return f"{x:,.0f}"
    return f"{x / 1e6:,.2f} M" if x < 1e9 else f"{x / 1e9:,.2f} B"


def _b(x: float) -> str:
    """Bytes in decimal units (GB = 10⁹ bytes, as GPU memory is sold)."""
    if not math.isfinite(x):
        return "does not fit"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= size:
            return f"{x / size:.1f} {unit}"
    return f"{x:.0f} B" if x else "—"


def _t(s: float | None) -> str:
    """Seconds as s / min / h / days."""
    if s is None:
        return "—"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h" if s < 172800 else f"{s / 86400:.1f} days"


def _layers(plan: Plan) -> str:
    """Neurons per layer in words: ``32 × 14,336`` or ``48 × (128 experts × 768)``."""
    m = plan.model
    parts = []
    for run in plan.to_dict()["model"]["neurons_per_layer"]:
        w = run["neurons"]
        if m.n_experts and w == m.n_experts * m.expert_width + m.shared_width:
            shared = f" + shared {m.shared_width:,}" if m.shared_width else ""
            parts.append(f"{run['layers']} × ({m.n_experts} experts × {m.expert_width:,}{shared})")
        else:
            parts.append(f"{run['layers']} × {w:,}")
    return " + ".join(parts)


def header(plan: Plan) -> list[str]:
    """Model facts and placement."""
    m, p = plan.model, plan.placement
    hw = "CPU only" if not plan.gpus else f"{plan.gpus} GPU(s) × {plan.gpu_mem_gb:g} GB"
    lines = [f"model: {m.source} (model_type {m.model_type})",
             f"FFN neurons: {m.n_neurons:,} = {_layers(plan)}"
             + (f" (feature vector {m.n_flat:,} with padding)" if m.n_flat != m.n_neurons else ""),
             f"parameters: {_n(m.params_total)}" + (f", {_n(m.params_active)} active per token "
                                                     f"({m.experts_per_token} of {m.n_experts} experts)" if m.n_experts else "")
             + f"; weights bf16 {_b(m.weight_bytes)}; KV cache {m.kv_bytes_per_token / 1024:.0f} KiB per token",
             f"preset: {plan.preset}; hardware: {hw}"]
    if plan.gpus:
        lines.append(f"placement: hf (hooks) {p.hf_span or '—'} GPU(s) per copy × {p.hf_copies}; "
                     f"vllm tp={p.vllm_tp or '—'} × {p.vllm_copies}")
    return lines


def table(plan: Plan) -> list[str]:
    """One row per stage."""
    head = ["stage", "engine", "generations", "new tokens ≤", "forwards", "tokens read", "feature store", "probe RAM",
            "peak GPU mem", "time", "time from"]
    rows = [[s.stage, s.engine, _n(s.generations), _n(s.new_tokens), _n(s.forwards), _n(s.tokens_read), _b(s.store_bytes),
             _b(s.probe_ram), _b(s.peak_gpu_bytes) if plan.gpus else "(CPU)", _t(s.seconds),
             ", ".join(dict.fromkeys(_KIND.get(k.strip(), k) for k in s.time_source.split(",") if k.strip())) or "—"]
            for s in plan.stages]
    rows.append(["total", "", "", "", "", "", _b(sum(s.store_bytes for s in plan.stages)), "", "", _t(plan.total_seconds), ""])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]

    def fmt(row: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |"

    return [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, rows)]


def sources(plan: Plan) -> list[str]:
    """Where every time figure comes from, and the notes (what is an estimate)."""
    out = ["", "time figures:"]
    for s in (*CPU_MEASURED, *GPU_PUBLISHED, H100, HF_EAGER):
        out.append(f"  [{s.key}] {s.figure:,.1f} {s.unit}: {s.what}. {s.where} ({s.date})")
    notes = [f"{s.stage}: {n}" for s in plan.stages for n in s.notes] + plan.notes
    return out + ["", "notes:"] + [f"  - {n}" for n in notes]


def render_text(plan: Plan) -> str:
    """The whole printed plan."""
    return "\n".join([*header(plan), "", *table(plan), *sources(plan)]) + "\n"

