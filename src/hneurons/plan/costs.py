"""Memory, engine placement and time of each stage: every figure is an estimate with its source.

Three kinds of numbers, kept apart so the output can say which is which:

* **measured here** (:data:`CPU_MEASURED`): this project's 2-core CPU machine on the embedded
  SmolLM2-135M (docs/RESULTS.md "The default run, measured"; ``benchmarks/probe.py``,
  ``benchmarks/extraction.py``), scaled to another model by its active parameters per token;
* **published** (:data:`GPU_PUBLISHED`): vLLM output throughput of Llama-3.1-8B and -70B on H100
  (ShareGPT prompts, batch up to 256), scaled by active parameters to the nearest reference;
* **derived** (:data:`H100`): the datasheet's bf16 FLOPS and HBM bandwidth with stated efficiency
  assumptions, for the hook-running Hugging Face engine on GPUs, which has no published benchmark.

Nothing here has been checked against a GPU run of hneurons; the output says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hneurons.plan.model import ModelSpec
from hneurons.plan.workload import Work

GB = 1e9


@dataclass(frozen=True)
class Source:
    """One figure and where it comes from."""

    key: str
    figure: float
    unit: str
    what: str
    where: str
    date: str


LAMBDA = "https://github.com/LambdaLabsML/vllm-benchmark/blob/main/benchmark_v0.md"
VLLM_BLOG = "https://blog.vllm.ai/2024/09/05/perf-update.html"
GPU_PUBLISHED = (
    Source("vllm_8b_h100", 3958.40, "output tok/s", "vLLM v0.6.0, Llama 3.1 8B, 1×H100-80GB-SXM, tp=1, ShareGPT, 5,000 "
           "prompts, max-num-seqs 256, scheduler steps 1 (10 steps: 8,088 tok/s); same setup as the vLLM v0.6.0 "
           f"announcement ({VLLM_BLOG})", LAMBDA, "2024-09"),
    Source("vllm_70b_4xh100", 2291.0, "output tok/s", "vLLM v0.6.0, Llama 3.1 70B, 4×H100-80GB-SXM, tp=4, same "
           "workload (10 steps: 3,543 tok/s)", LAMBDA, "2024-09"),
)
_REF_PARAMS = {"vllm_8b_h100": (8.03e9, 1), "vllm_70b_4xh100": (70.6e9, 4)}
H100 = Source("h100_datasheet", 989.0, "bf16 TFLOP/s (dense)", "NVIDIA H100 SXM: 989 TFLOPS bf16 dense, 3.35 TB/s HBM3",
              "https://www.nvidia.com/en-us/data-center/h100/", "2023")
H100_BANDWIDTH = 3.35e12
HF_EAGER = Source("hf_eager_step", 23.15, "tok/s", "transformers generate, Llama-7B fp16, eager, batch 1, on an A10G: "
                  "43 ms per step, of which reading 13.5 GB at the A10G's 600 GB/s explains ~22 ms: ~0.6 ms of "
                  "launch overhead per layer and step", "https://github.com/fxmarty/accelerated-pytorch-transformers-generation",
                  "README, undated")
# Assumptions of the derived hook-engine figures (not measured on a GPU here): eager PyTorch
# forward at 35 % of peak FLOPS; decode reads all weights once per step at 70 % of HBM bandwidth,
# plus the per-layer launch overhead read off HF_EAGER.
MFU_FORWARD = 0.35
BW_EFFICIENCY = 0.7
LAUNCH_S_PER_LAYER = 6e-4
CPU_MEASURED = (
    Source("cpu_sampling", 339.0, "new tok/s", "sampling on SmolLM2-135M-Instruct (134.5 M parameters), bf16, 2 cores "
           "(responses stage of the default run, commit 368e9d4)", "docs/RESULTS.md, 'The default run, measured'", "2026-12-02"),
    Source("cpu_forward", 1280.0, "tok/s", "hooked CETT forwards on SmolLM2-135M, bf16, 2 cores: the default run's features "
           "stage read 370 responses in 18 s, × 62.3 tokens per chat sequence (mean over 48 TriviaQA sequences in "
           "benchmarks/extraction.py)", "docs/RESULTS.md, 'The default run, measured'", "2026-12-02"),
    Source("cpu_probe_path", 85.5, "s", "L1 path over 8 C (newton_cd, warm-started) from the float16 feature store, "
           "4,000 rows × 458,752 neurons (Llama-3.1-8B shape), peak RSS 1.27× the float16 matrix (load average "
           "6-7 on 2 cores, other jobs running: an upper bound)", "benchmarks/scale.py --shape 8b --json "
           "(docs/BENCHMARKS.md)", "2026-12-06"),
)
EMBEDDED_PARAMS = 134.5e6
PROBE_REF_CELLS = 4000 * 458_752
PROBE_RSS_OVER_MATRIX = 1.27  # peak RSS of that fit over the matrix in the store's dtype (no float32 copy is made)
# one cold fit at one C over a warm-started 8-C path, both on 1,000 × 46,080 (benchmarks/probe.py: 9.0 s vs 13.7 s)
PROBE_COLD_FIT_OVER_PATH = 9.0 / 13.7


def source(key: str) -> Source:
    """A source by key (every time estimate names one)."""
    return next(s for s in (*GPU_PUBLISHED, H100, HF_EAGER, *CPU_MEASURED) if s.key == key)


@dataclass(frozen=True)
class Placement:
    """Where the weights go: GPUs per model copy for each engine, and how many copies run."""

    gpus: int
    gpu_mem: float  # bytes per GPU
    hf_span: int  # GPUs one Hugging Face copy spans (device_map="auto" when > 1); 0: does not fit
    vllm_tp: int  # tensor-parallel size of one vLLM engine; 0: does not fit

    @property
    def hf_copies(self) -> int:
        """Data-parallel copies of the hook engine (one process per copy)."""
        return self.gpus // self.hf_span if self.hf_span else 0

    @property
    def vllm_copies(self) -> int:
        """Data-parallel vLLM engines."""
        return self.gpus // self.vllm_tp if self.vllm_tp else 0


def place(spec: ModelSpec, gpus: int, gpu_mem_gb: float) -> Placement:
    """Spread the bf16 weights so that 80 % of each GPU's memory holds them (the rest: KV cache, activations)."""
    mem = gpu_mem_gb * GB
    if gpus <= 0:
        return Placement(0, mem, 0, 0)
    need = max(1, math.ceil(spec.weight_bytes / (0.8 * mem)))
    tp = 1 << (need - 1).bit_length()  # vLLM tensor parallelism: a power of two
    return Placement(gpus, mem, need if need <= gpus else 0, tp if tp <= gpus else 0)


def hf_generation_memory(spec: ModelSpec, work: Work, span: int) -> float:
    """Bytes on one GPU of a hook-engine copy while generating: weights + KV cache + last-token logits."""
    kv = work.batch * work.seq_len * spec.kv_bytes_per_token
    return (spec.weight_bytes + kv) / max(1, span) + work.batch * spec.vocab_size * 4


def hf_forward_memory(spec: ModelSpec, work: Work, span: int, regions: int) -> float:
    """Bytes on one GPU during a hooked forward: weights, KV, one layer's activations, logits, CETT sums."""
    tokens = work.batch * work.seq_len
    layer = tokens * (4 * spec.d_model + 3 * spec.d_ff) * 2
    logits = tokens * spec.vocab_size * 4
    cett = work.batch * spec.n_flat * regions * 4
    return (spec.weight_bytes + tokens * spec.kv_bytes_per_token) / max(1, span) + layer + logits + cett


def gpu_decode_rate(spec: ModelSpec, engine: str, p: Placement, batch: int) -> tuple[float, str]:
    """(new tokens per second over all copies, source key) of ``engine`` on the placed GPUs."""
    if engine == "vllm":
        key = min(_REF_PARAMS, key=lambda k: abs(math.log(_REF_PARAMS[k][0] / spec.params_active)))
        ref_params, ref_gpus = _REF_PARAMS[key]
        per_gpu = source(key).figure / ref_gpus * ref_params / spec.params_active
        return per_gpu * p.vllm_tp * p.vllm_copies, key
    step_mem = spec.weight_bytes / (H100_BANDWIDTH * BW_EFFICIENCY)
    step_flops = 2 * spec.params_active * batch / (H100.figure * 1e12 * MFU_FORWARD)
    step = max(step_mem, step_flops) + spec.n_layers * LAUNCH_S_PER_LAYER
    return batch / step * p.hf_copies, "hf_eager_step"


def gpu_forward_rate(spec: ModelSpec, busy_gpus: int) -> float:
    """Tokens per second read by forwards (compute-bound, derived) with ``busy_gpus`` computing at once."""
    return H100.figure * 1e12 * MFU_FORWARD / (2 * spec.params_active) * busy_gpus


def cpu_rate(spec: ModelSpec, key: str) -> float:
    """A CPU figure measured on the embedded model, scaled by active parameters per token."""
    return source(key).figure * EMBEDDED_PARAMS / spec.params_active


def probe_seconds(rows: int, n_flat: int, n_Cs: int, paths: int, resamples: int) -> float:  # noqa: N803 - C is the paper's symbol
    """``paths`` C paths (the paper's rule, plus one per CV fold and stability subsample: each reads every row,
    the left-out ones at weight 0) and the stability refits, scaled linearly in rows × neurons × C values."""
    path_s = source("cpu_probe_path").figure * rows * n_flat / PROBE_REF_CELLS * n_Cs / 8
    return path_s * paths + (resamples if resamples >= 2 else 0) * PROBE_COLD_FIT_OVER_PATH * path_s


def probe_ram(rows: int, n_flat: int, width: int) -> int:
    """Peak RSS of the fit: the rows in the store's dtype (``width`` bytes) times the measured overhead."""
    return int(PROBE_RSS_OVER_MATRIX * rows * n_flat * width)
