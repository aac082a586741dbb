"""`hneurons plan`: neuron counts, work and bytes computed by hand from the vendored configs.

Every expected number below is written out from the config values (tests/data/configs/README.md)
and the preset's sizes, not taken from the code under test.
"""

from __future__ import annotations

import json
import shutil
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from hneurons.plan import costs, make_plan
from hneurons.plan.model import ModelSpec, find_config, model_spec

CONFIGS = Path(__file__).resolve().parent.parent / "data" / "configs"


@lru_cache(maxsize=None)
def spec(name: str) -> ModelSpec:
    return model_spec(str(CONFIGS / name))


@pytest.mark.parametrize("name, layers, per_layer, total", [
    ("Llama-3.1-8B-Instruct", 32, 14_336, 458_752),
    ("Llama-3.3-70B-Instruct", 80, 28_672, 2_293_760),
    ("Mistral-Small-24B-Instruct-2501", 40, 32_768, 1_310_720),
    ("gemma-3-27b-it", 62, 21_504, 1_333_248),
    ("Qwen3-30B-A3B", 48, 128 * 768, 4_718_592),
    ("SmolLM2-135M-Instruct", 30, 1_536, 46_080),
])
def test_neuron_counts_match_the_hand_computation(name: str, layers: int, per_layer: int, total: int) -> None:
    s = spec(name)
    assert layers * per_layer == total  # the hand computation itself
    assert s.n_layers == layers and s.widths == (per_layer,) * layers
    assert s.n_neurons == total and s.n_flat == total and s.d_ff == per_layer


def test_moe_experts_are_counted_per_expert_neuron() -> None:
    s = spec("Qwen3-30B-A3B")
    assert (s.n_experts, s.expert_width, s.experts_per_token, s.shared_width, s.moe_layers) == (128, 768, 8, 0, 48)
    # active = total − 48 layers × (128 − 8) unchosen experts × 3 matrices of 2,048 × 768
    assert s.params_total - s.params_active == 48 * 120 * 3 * 2048 * 768
    assert 3.3e9 < s.params_active < 3.4e9 and 30.4e9 < s.params_total < 30.6e9  # published: 30.5 B, 3.3 B active


@pytest.mark.parametrize("name, params", [
    ("SmolLM2-135M-Instruct", 134_515_008),  # = manifest n_parameters of the embedded model (tied embeddings)
    # embeddings + lm_head + per layer (q, k, v, o, gate, up, down, 2 norms) + final norm
    ("Llama-3.1-8B-Instruct", 2 * 128_256 * 4096 + 32 * (4096 * 4096 * 2 + 4096 * 1024 * 2 + 3 * 4096 * 14_336 + 2 * 4096) + 4096),
    ("Llama-3.3-70B-Instruct", 2 * 128_256 * 8192 + 80 * (8192 * 8192 * 2 + 8192 * 1024 * 2 + 3 * 8192 * 28_672 + 2 * 8192) + 8192),
    ("Mistral-Small-24B-Instruct-2501", 2 * 131_072 * 5120 + 40 * (5120 * 4096 * 2 + 5120 * 1024 * 2 + 3 * 5120 * 32_768 + 2 * 5120) + 5120),
])
def test_parameter_counts(name: str, params: int) -> None:
    assert spec(name).params_total == params


def test_kv_cache_per_token_by_hand() -> None:
    assert spec("Llama-3.1-8B-Instruct").kv_bytes_per_token == 2 * 32 * 8 * 128 * 2
    assert spec("Llama-3.3-70B-Instruct").kv_bytes_per_token == 2 * 80 * 8 * 128 * 2
    assert spec("gemma-3-27b-it").kv_bytes_per_token == 2 * 62 * 16 * 128 * 2


def test_paper_preset_work_and_bytes_for_llama_8b() -> None:
    plan = make_plan(str(CONFIGS / "Llama-3.1-8B-Instruct"), "paper", gpus=1)
    st = {s.stage: s for s in plan.stages}
    # 10,000 asked, the packaged pool holds 8,837 questions; K = 10, ≤ 50 new tokens
    assert st["responses"].generations == 8837 * 10 and st["responses"].new_tokens == 8837 * 10 * 50
    # 1,000 training + 250 held-out questions per class (20 % held out), one forward each
    assert st["features"].forwards == 2 * 1250
    assert st["features"].store_bytes == 2500 * 458_752 * 2 * 2  # answer + other regions, float16
    # 3-vs-1: 4,000 float16 rows read from the store × the measured 1.27 peak-RSS overhead (benchmarks/scale.py)
    assert st["probe"].probe_ram == int(1.27 * 4000 * 458_752 * 2)
    # 1 + 5 CV folds + 20 stability subsamples = 26 paths of 8 C at the measured 85.5 s (same shape), plus
    # 10 stability resamples, each a cold fit at 9.0 / 13.7 of a path
    fit_s = 85.5 * 26 + 10 * 85.5 * 9.0 / 13.7
    assert costs.probe_seconds(4000, 458_752, 8, 26, 10) == pytest.approx(fit_s)
    assert st["probe"].seconds > fit_s  # plus the suppression check's generations
    # α grid of 7: 6 scaled α × (H + 3 random sets) + α = 1 once; items 687 + 1,000 + 1,000 × 4 turns + 390,
    # and the qa family's 500 questions in each of its 4 sets
    assert st["intervene"].generations == 25 * (687 + 1000 + 4 * 1000 + 390 + 4 * 500)
    assert st["origin"].notes and "origin.base_model" in st["origin"].notes[0]
    assert all(s.seconds is not None and s.seconds > 0 for s in plan.stages)
    assert st["responses"].engine == "hf, 1 GPU" and "CPU (numpy)" in st["probe"].engine


def test_cpu_time_is_the_measured_rate_scaled_by_parameters() -> None:
    plan = make_plan(str(CONFIGS / "SmolLM2-135M-Instruct"), "default", gpus=0)
    responses = next(s for s in plan.stages if s.stage == "responses")
    # screened upper bound: 4,500 greedy + 4,500 × 5 samples, ≤ 32 tokens, at 339 tok/s × 134.5 M / 134.515 M params
    assert responses.new_tokens == (4500 + 4500 * 5) * 32
    assert responses.seconds == pytest.approx(responses.new_tokens / (339 * 134.5e6 / 134_515_008))
    assert responses.time_source == "cpu_sampling" and responses.peak_gpu_bytes == 0


def test_placement_of_70b() -> None:
    eight = make_plan(str(CONFIGS / "Llama-3.3-70B-Instruct"), "paper", gpus=8, gpu_mem_gb=80)
    # 141.1 GB of bf16 weights, 64 GB usable per GPU: 3 GPUs per hf copy, vLLM tp = 4
    p = eight.placement
    assert (p.hf_span, p.hf_copies, p.vllm_tp, p.vllm_copies) == (3, 2, 4, 2)
    assert any("--set responses.backend=vllm (vllm tp=4 × 2" in n for n in eight.notes)
    assert any("torchrun" in n for n in eight.notes)  # two hf copies need one process each
    one = make_plan(str(CONFIGS / "Llama-3.3-70B-Instruct"), "paper", gpus=1, gpu_mem_gb=80)
    assert one.total_seconds is None and any("do not fit" in n for n in one.notes)
    assert all("does not fit" in s.engine for s in one.stages if s.stage != "probe")


def test_overrides_change_the_engine_and_sizes() -> None:
    plan = make_plan(str(CONFIGS / "Llama-3.1-8B-Instruct"), "paper", gpus=1,
                     overrides=["responses.backend=vllm", "intervene.n_items=10"])
    st = {s.stage: s for s in plan.stages}
    assert st["responses"].engine == "vllm tp=1" and st["responses"].peak_gpu_bytes == pytest.approx(0.9 * 80e9)
    assert st["responses"].time_source == "vllm_8b_h100" and st["intervene"].engine == "hf, 1 GPU"
    assert st["intervene"].generations == 25 * (10 + 10 + 4 * 10 + 10 + 4 * 10)  # qa: 10 in each of 4 sets
    assert not any("exceeds" in n for n in plan.notes)
    big = make_plan(str(CONFIGS / "Llama-3.1-8B-Instruct"), "paper", gpus=1, overrides=["responses.batch_size=1024"])
    # intervene: 1,024 sequences × (780 + 256) tokens × 128 KiB of KV cache = 139 GB > 80 GB
    assert any("peak memory of" in n and "intervene" in n for n in big.notes)


def test_vllm_reference_scaling() -> None:
    from hneurons.plan.costs import gpu_decode_rate, place

    s = spec("Llama-3.1-8B-Instruct")
    rate, key = gpu_decode_rate(s, "vllm", place(s, 2, 80), batch=64)
    assert key == "vllm_8b_h100" and rate == pytest.approx(2 * 3958.40 * 8.03e9 / s.params_active)


def test_find_config_in_the_hub_cache(tmp_path: Path) -> None:
    snap = tmp_path / "models--org--tiny" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    shutil.copy(CONFIGS / "SmolLM2-135M-Instruct" / "config.json", snap / "config.json")
    (tmp_path / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "models--org--tiny" / "refs" / "main").write_text("abc123")
    assert find_config("org/tiny", cache=tmp_path) == snap / "config.json"


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    from hneurons.cli.main import main

    monkeypatch.setattr(sys, "argv", ["hneurons", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0)


def test_cli_table_and_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(monkeypatch, "plan", str(CONFIGS / "Qwen3-30B-A3B"), "--gpus", "1") == 0
    out = capsys.readouterr().out
    assert "FFN neurons: 4,718,592 = 48 × (128 experts × 768)" in out and "| intervene |" in out
    assert "https://github.com/LambdaLabsML/vllm-benchmark" in out
    assert _main(monkeypatch, "plan", str(CONFIGS / "Llama-3.1-8B-Instruct" / "config.json"), "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"]["n_neurons"] == 458_752 and data["model"]["neurons_per_layer"] == [{"layers": 32, "neurons": 14_336}]
    assert [s["stage"] for s in data["stages"]] == ["responses", "features", "probe", "detect", "intervene", "origin"]


@pytest.mark.parametrize("content, words", [
    ('{"model_type": "llamma", "hidden_size": 8}', "closest supported: 'llama'"),
    ("{not json", "not valid JSON"),
    ('{"hidden_size": 8}', 'no "model_type"'),
    (None, "does not exist"),
])
def test_bad_input_is_one_line_exit_2(content: str | None, words: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    assert _main(monkeypatch, "plan", str(path)) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0], err


def test_directory_without_config_and_uncached_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(monkeypatch, "plan", str(tmp_path)) == 2
    assert "has no config.json" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert _main(monkeypatch, "plan", "nobody/nothing") == 2
    assert "huggingface-cli download nobody/nothing config.json" in capsys.readouterr().err


def test_packaged_sizes_match_the_loaders() -> None:
    """The plan's pool sizes and benchmark settings equal what the stages load and use."""
    from hneurons.data import load_dataset
    from hneurons.intervention import base, qa, tasks
    from hneurons.plan.workload import BENCHMARKS, CONSTRUCTED_DEFAULT, POOL_SIZES

    for name in ("triviaqa_dev", "triviaqa_test", "nq_open", "bioasq", "smoke_qa", "smoke_heldout"):
        assert POOL_SIZES[name] == len(load_dataset(name)), name
    assert POOL_SIZES["falseqa_false_premise"] == sum(r.label == 1 for r in load_dataset("falseqa"))
    assert POOL_SIZES["jailbreak"] == len(load_dataset("forbidden_questions"))
    assert CONSTRUCTED_DEFAULT == base.N_CONSTRUCTED_DEFAULT
    assert BENCHMARKS["qa"][0] == qa.QA_PER_SET_DEFAULT and BENCHMARKS["qa"][2] == len(qa.QA_SETS)
    for name, (_, max_new, _) in BENCHMARKS.items():
        assert tasks.get_benchmark(name).params().max_new_tokens == max_new, name


def _write_config(tmp_path: Path, model_type: str, text: dict) -> Path:
    from transformers import AutoConfig

    AutoConfig.for_model(model_type, text_config=text).save_pretrained(tmp_path)
    return tmp_path


def test_multimodal_wrapper_whose_text_model_is_a_row(tmp_path: Path) -> None:
    """config.json says qwen3_5_moe (not a row); AutoModelForCausalLM builds qwen3_5_moe_text (a row)."""
    from tests.tiny_archs import MOE

    text = dict(MOE, shared_expert_intermediate_size=24, layer_types=["full_attention"] * 2)
    s = model_spec(str(_write_config(tmp_path, "qwen3_5_moe", text)))
    assert s.model_type == "qwen3_5_moe_text"
    assert s.widths == (4 * 16 + 24,) * 2 and s.n_neurons == 176  # 4 experts of 16, shared expert of 24


def test_heterogeneous_per_layer_config_gemma4(tmp_path: Path) -> None:
    """Gemma 4 refuses a global head_dim; the KV estimate sums its layers (sliding: 2 KV heads × 8,
    full: 2 × 512, K and V, 2 bytes) instead of failing with transformers' exception."""
    from tests.tiny_archs import GEMMA_ACTS, GQA

    s = model_spec(str(_write_config(tmp_path, "gemma4", dict(GQA, **GEMMA_ACTS, sliding_window=16))))
    assert s.model_type == "gemma4" and s.n_neurons == 2 * 48
    assert s.kv_bytes_per_token == 2 * 2 * 8 * 2 + 2 * 2 * 512 * 2


def test_a_preset_with_a_time_budget_says_the_sizes_may_shrink() -> None:
    smollm = str(CONFIGS / "SmolLM2-135M-Instruct")
    assert any("budget_minutes = 25: a run times its sampler" in n for n in make_plan(smollm, "default").notes)
    assert not any("budget_minutes" in n for n in make_plan(smollm, "paper").notes)
    assert not any("budget_minutes" in n
                   for n in make_plan(smollm, "default", overrides=["budget_minutes=none"]).notes)
