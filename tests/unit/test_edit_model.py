"""edit-model and the served intervention engine, without a model: folders, neuron sets, URLs, config."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hneurons.errors import ConfigError
from hneurons.intervention.edit_model import check_out, neuron_set
from hneurons.intervention.engines import check_engine, endpoint_url, served_engine
from hneurons.intervention.sweep import random_sets


def test_out_must_be_new_or_empty_and_not_the_source(tmp_path: Path) -> None:
    src = tmp_path / "model"
    src.mkdir()
    (src / "config.json").write_text("{}")
    check_out(tmp_path / "new", src)
    (tmp_path / "empty").mkdir()
    check_out(tmp_path / "empty", src)
    with pytest.raises(ConfigError, match="source model's folder"):
        check_out(src, src)
    with pytest.raises(ConfigError, match="source model's folder"):
        check_out(src / "sub", src)
    with pytest.raises(ConfigError, match="source model's folder"):  # a GGUF file: its folder is the source
        check_out(tmp_path, tmp_path / "m.gguf")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "a").write_text("a")
    with pytest.raises(ConfigError, match="not an empty folder"):
        check_out(tmp_path / "used", src)


def test_random_sets_are_the_intervene_stage_controls() -> None:
    h = np.array([3, 17, 40])
    assert neuron_set("h", h, 100, 7) is h
    stage = random_sets(100, h, 7, 3)
    for s in range(3):
        got = neuron_set(f"random:{s}", h, 100, 7)
        assert np.array_equal(got, stage[f"random_{s}"]) and len(got) == 3 and not set(got) & set(h)
    for bad in ("H-neurons", "random", "random:x", "random:-1"):
        with pytest.raises(ConfigError, match="choose one of h, random:SEED"):
            neuron_set(bad, h, 100, 7)


def test_endpoint_url_fills_condition_and_alpha() -> None:
    url = "http://gpu{condition}.lan:80/a{alpha}/v1"
    assert endpoint_url(url, "H", 0.0) == "http://gpuH.lan:80/a0/v1"
    assert endpoint_url(url, "random_0", 2.5) == "http://gpurandom_0.lan:80/a2.5/v1"
    assert endpoint_url(url, "H", 1) == "http://gpuH.lan:80/a1/v1"


def _icfg(**kw: object) -> SimpleNamespace:
    return SimpleNamespace(**{"backend": "openai", "backend_url": "http://h:1/{condition}/{alpha}",
                              "backend_model": "m", "method": "hook", **kw})


def test_engine_settings_are_checked_in_one_line() -> None:
    check_engine(_icfg(), 2)
    check_engine(_icfg(backend="hf", backend_url=None, backend_model=None), 2)
    with pytest.raises(ConfigError, match="choose one of hf, openai, vllm"):
        check_engine(_icfg(backend="tgi"), 1)
    with pytest.raises(ConfigError, match="needs intervene.backend_url"):
        check_engine(_icfg(backend_url=None), 1)
    with pytest.raises(ConfigError, match="has no {alpha}"):
        check_engine(_icfg(backend_url="http://h:1/{condition}"), 1)
    with pytest.raises(ConfigError, match="has no {condition}"):
        check_engine(_icfg(backend_url="http://h:1/{alpha}"), 2)
    check_engine(_icfg(backend_url="http://h:1/{alpha}"), 1)


def test_served_engine_sends_each_condition_and_alpha_to_its_server(monkeypatch: pytest.MonkeyPatch) -> None:
    import hneurons.core.backends as backends
    from hneurons.core.generation import Generation, SamplingParams

    seen: list[str] = []

    class Fake:
        def __init__(self, base_url: str, model: str) -> None:
            self.url = base_url

        def generate(self, prompts, params, progress=True):
            seen.append(self.url)
            return [[Generation(f"{self.url}|{p}", (), "stop")] for p in prompts]

    monkeypatch.setattr(backends, "OpenAIBackend", Fake)
    tok = SimpleNamespace()
    conds = {"H": np.array([1, 2]), "random_0": np.array([5, 9])}
    generate, scaler = served_engine("http://s/{condition}/{alpha}", "m", tok, False, conds)
    convs = [[{"role": "user", "content": "q"}]]
    params = SamplingParams(temperature=0.0, max_new_tokens=4)
    generate(convs, params)
    with scaler(np.array([5, 9]), 0.0):
        generate(convs, params)
        with scaler(np.array([1, 2]), 2.0):
            generate(convs, params)
        generate(convs, params)
    assert seen == ["http://s/H/1", "http://s/random_0/0", "http://s/H/2", "http://s/random_0/0"]
    with pytest.raises(ConfigError, match="no server for this neuron set"):
        with scaler(np.array([7]), 0.0):
            pass


def test_edit_model_command_refuses_a_non_run_in_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    (tmp_path / "run").mkdir()
    proc = subprocess.run([sys.executable, "-m", "hneurons.cli.main", "edit-model", str(tmp_path / "run"), "--alpha",
                           "0", "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "not a run directory" in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr


def test_vllm_column_edit_on_row_parallel_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-worker edit of the (unverified) vllm engine, on fake tensor-parallel shards of W_down."""
    import pickle
    import sys
    import types

    import torch

    from hneurons.intervention.engines import _VLLMColumns

    d_ff, hidden, tp = 8, 3, 2
    full = torch.arange(hidden * d_ff * 2, dtype=torch.float32).reshape(2, hidden, d_ff)  # 2 layers

    def shard_model(rank: int) -> types.SimpleNamespace:
        n = d_ff // tp
        layers = [types.SimpleNamespace(mlp=types.SimpleNamespace(down_proj=types.SimpleNamespace(
            weight=torch.nn.Parameter(full[i, :, rank * n:(rank + 1) * n].clone(), requires_grad=False),
            input_size_per_partition=n))) for i in range(2)]
        return types.SimpleNamespace(model=types.SimpleNamespace(layers=layers))

    grouped = {0: [1, 6], 1: [3]}
    edit = pickle.loads(pickle.dumps(_VLLMColumns(grouped, 0.5)))  # workers receive it pickled
    want = full.clone()
    for layer, cols in grouped.items():
        want[layer][:, cols] *= 0.5
    for rank in range(tp):
        fake = types.ModuleType("vllm.distributed")
        fake.get_tensor_model_parallel_rank = lambda rank=rank: rank
        monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
        monkeypatch.setitem(sys.modules, "vllm.distributed", fake)
        model = shard_model(rank)
        n = d_ff // tp
        assert edit(model) == sum(rank * n <= j < (rank + 1) * n for cols in grouped.values() for j in cols)
        for i in range(2):
            assert torch.equal(model.model.layers[i].mlp.down_proj.weight, want[i, :, rank * n:(rank + 1) * n])
        _VLLMColumns(grouped, None)(model)
        for i in range(2):
            assert torch.equal(model.model.layers[i].mlp.down_proj.weight, full[i, :, rank * n:(rank + 1) * n])
