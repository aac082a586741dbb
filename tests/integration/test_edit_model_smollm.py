"""`hneurons edit-model` on the embedded SmolLM2: the edited checkpoint answers as the hook path.

Scaling z_j by α before ``down_proj`` equals scaling column j of ``W_down`` by α; for α ∈ {0, 2}
both are exact in float arithmetic, so greedy answers must be identical, token for token, for the
H-Neurons of the fixture run and for a random set of the same size — loaded by ``transformers``
from the written safetensors, and served over ``/v1/completions`` to the sweep's ``openai`` engine.
"""

from __future__ import annotations

import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server_kit import served  # noqa: E402

from hneurons.config import PAPER_SUFFIX, load_config  # noqa: E402
from hneurons.core.generation import HFBackend, SamplingParams  # noqa: E402
from hneurons.core.hooks import scale_neurons  # noqa: E402
from hneurons.data import load_dataset  # noqa: E402
from hneurons.errors import ConfigError  # noqa: E402
from hneurons.intervention.edit_model import MANIFEST, EditRequest, edit_model, neuron_set  # noqa: E402
from hneurons.probe.h_neurons import load_h_neurons  # noqa: E402
from hneurons.rundir import RunDir  # noqa: E402
from hneurons.text.prompts import render_prompt, user_text  # noqa: E402

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_fixture"
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=16)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory holding the fixture run's H-Neurons, made with the embedded model in float32."""
    root = tmp_path_factory.mktemp("run")
    rd = RunDir(root)
    rd.init_manifest(load_config("smoke", overrides={"model.dtype": "float32"}).to_dict(), None, 0)
    (root / "probe").mkdir()
    shutil.copy(FIXTURE / "probe" / "h_neurons.json", root / "probe" / "h_neurons.json")
    rd.mark_done("probe", "fixture", 0.0, {})
    return root


@pytest.fixture(scope="module")
def prompts(loaded) -> list[str]:
    questions = load_dataset("smoke_qa")[:20]
    return [render_prompt(loaded.tokenizer, user_text(q.question, PAPER_SUFFIX), chat=True) for q in questions]


def _hook_answers(loaded, neurons: np.ndarray, alpha: float, prompts: list[str], batch_size: int) -> list[str]:
    backend = HFBackend(loaded.model, loaded.tokenizer, batch_size=batch_size)
    with scale_neurons(loaded.layout, neurons, alpha):
        return [g[0].text for g in backend.generate(prompts, GREEDY, progress=False)]


def _edited(run_dir: Path, out: Path, spec: str, alpha: float):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    edit_model(EditRequest(run_dir, alpha, out, neurons=spec), log=lambda _: None)
    model = AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(out)


@pytest.mark.parametrize("spec", ["h", "random:0"])
def test_edited_checkpoint_answers_as_the_hook_path(loaded, run_dir: Path, prompts: list[str], spec: str,
                                                    tmp_path: Path) -> None:
    h = load_h_neurons(run_dir / "probe" / "h_neurons.json", loaded.layout.d_ff, loaded.layout.n_layers)
    neurons = neuron_set(spec, h, loaded.layout.n_neurons, 0)
    assert len(neurons) == len(h) > 0
    plain = [g[0].text for g in HFBackend(loaded.model, loaded.tokenizer, batch_size=8).generate(prompts, GREEDY,
                                                                                                   progress=False)]
    for alpha in (0.0, 2.0):
        out = tmp_path / f"{spec.replace(':', '_')}_{alpha:g}"
        model, tok = _edited(run_dir, out, spec, alpha)
        edited = [g[0].text for g in HFBackend(model, tok, batch_size=8).generate(prompts, GREEDY, progress=False)]
        hooked = _hook_answers(loaded, neurons, alpha, prompts, 8)
        assert edited == hooked, (spec, alpha)
        manifest = (out / MANIFEST).read_text()
        assert f'"alpha": {alpha}' in manifest and f'"neurons": "{spec}"' in manifest
        if alpha == 0.0 and spec == "h":
            assert edited != plain  # the edit does something: suppressing the H-Neurons changes answers
        del model
        shutil.rmtree(out)


def test_edit_model_refuses_a_used_folder(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(ConfigError, match="not an empty folder"):
        edit_model(EditRequest(run_dir, 0.0, tmp_path / "used"), log=lambda _: None)


def _completions_app(model, tok) -> object:
    """A minimal /v1/completions server over an edited checkpoint (one request at a time, no padding)."""
    from fastapi import FastAPI

    app = FastAPI()
    backend = HFBackend(model, tok, batch_size=1)
    lock = threading.Lock()

    @app.post("/v1/completions")
    def complete(body: dict) -> dict:
        params = SamplingParams(temperature=body.get("temperature", 0.0), max_new_tokens=body["max_tokens"],
                                n=body.get("n", 1), stop=tuple(body.get("stop") or ()))
        with lock:
            gens = backend.generate([body["prompt"]], params, progress=False)[0]
        return {"choices": [{"index": i, "text": g.text, "finish_reason": g.finish_reason} for i, g in enumerate(gens)]}

    return app


def test_sweep_engine_through_a_server_of_the_edited_checkpoint(loaded, run_dir: Path, prompts: list[str],
                                                                 tmp_path: Path) -> None:
    from hneurons.intervention.engines import served_engine

    h = load_h_neurons(run_dir / "probe" / "h_neurons.json", loaded.layout.d_ff, loaded.layout.n_layers)
    model, tok = _edited(run_dir, tmp_path / "h_2", "h", 2.0)
    convs = [[{"role": "user", "content": user_text(q.question, PAPER_SUFFIX)}] for q in load_dataset("smoke_qa")[:20]]
    with served(_completions_app(model, tok)) as url:
        generate, scaler = served_engine(url, "edited", loaded.tokenizer, True, {"H": h})  # one server: H at α = 2
        with scaler(h, 2.0):
            answers = [g.text for g in generate(convs, GREEDY)]
    assert answers == _hook_answers(loaded, h, 2.0, prompts, 1)
