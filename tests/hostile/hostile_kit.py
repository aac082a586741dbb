"""Builders for hostile run directories: a tiny real model folder, a fitted-looking run, a model
folder whose custom code leaves a marker file, and a listener that records every connection.

Everything is small (a 2-layer random Llama, a 128-weight probe) so the hostile suite runs in
seconds; the commands are the real CLI, in process or as a subprocess where code execution is the
question (a fresh interpreter and its own Hugging Face module cache).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
from helpers import bpe_tokenizer, tiny_llama  # noqa: E402

from hneurons.config import load_config  # noqa: E402
from hneurons.probe.estimator import HNeuronProbe  # noqa: E402
from hneurons.rundir import RunDir  # noqa: E402

N_LAYERS, D_FF = 2, 64  # tiny_llama: 2 layers × intermediate 64
WEIGHTS = {3: 3.0, 17: -2.0, 64 + 5: 4.0, 64 + 40: 1.5, 100: -2.5}
INTERCEPT = -0.5
ITEMS = [{"id": "a", "question": "Who wrote Hamlet?", "answer": "William Shakespeare wrote it."},
         {"id": "b", "question": "What is the capital of France?", "answer": "Paris is the capital."},
         {"id": "c", "question": "Which is the largest planet?", "answer": "the largest planet is Jupiter"}]


def save_tiny_model(folder: Path) -> Path:
    """A loadable Hugging Face folder (config, safetensors weights, tokenizer with a chat template)."""
    tok = bpe_tokenizer()
    model = tiny_llama(tok, seed=3)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def model_fingerprint(folder: Path) -> str:
    from hneurons.core.models import fingerprint

    return fingerprint(str(folder))


def make_probe(weights: dict[int, float] | None = None, n: int = N_LAYERS * D_FF) -> HNeuronProbe:
    probe = HNeuronProbe(C=1.0, d_ff=D_FF)
    coef = np.zeros(n)
    for f, w in (weights or WEIGHTS).items():
        coef[f] = w
    probe.coef_ = coef
    probe.intercept_ = INTERCEPT
    probe.classes_ = np.array([0, 1])
    probe.n_features_in_ = n
    return probe


def make_run(root: Path, model_dir: Path, *, settings: dict[str, Any] | None = None,
             fingerprint: str | None = None, probe: HNeuronProbe | None = None) -> Path:
    """A run directory as `hneurons run` leaves it after the probe stage, with its done-marker.

    ``settings`` are ``section.key`` values written into the manifest's config (what an attacker
    controls); ``fingerprint`` is the model fingerprint the run records (default: ``model_dir``'s).
    """
    fp = fingerprint or model_fingerprint(model_dir)
    cfg = load_config("paper", overrides={"model.name": str(model_dir), "responses.max_new_tokens": 6})
    config = cfg.to_dict()
    for key, value in (settings or {}).items():
        section, name = key.split(".")
        config[section][name] = value
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps({
        "config": config, "seed": 0, "stages": {},
        "model": {"name": model_dir.name, "source": str(model_dir), "fingerprint": fp}}))
    probe = probe or make_probe()
    probe.save(root / "probe" / "probe.safetensors")
    (root / "probe" / "h_neurons.json").write_text(json.dumps({
        "model_fingerprint": fp, "d_ff": D_FF, "n_layers": N_LAYERS,
        "neurons": [{"layer": layer, "neuron": n, "weight": w} for layer, n, w in probe.h_neurons_]}))
    RunDir(root).mark_done("probe", "fp-probe", 1.0, {"C": 1.0})
    return root


def write_items(path: Path, items: list[dict[str, Any]] | None = None) -> Path:
    path.write_text("".join(json.dumps(it) + "\n" for it in (items or ITEMS)))
    return path


EVIL_CODE = """import pathlib
pathlib.Path({marker!r}).write_text("the run directory ran code")
"""


def evil_model_dir(folder: Path, marker: Path, working: Path | None = None) -> Path:
    """A model folder whose config and tokenizer point (auto_map) at a module that writes ``marker``.

    With ``working`` (a real model folder) it is that model plus the auto_map: it loads and scores
    without its custom code, which is what an attacker would ship.
    """
    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {"model_type": "hneurons_evil", "architectures": ["EvilModel"]}
    tok_config: dict[str, Any] = {"tokenizer_class": "EvilTokenizer"}
    if working is not None:
        for f in working.iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        config = json.loads((working / "config.json").read_text())
        tok_config = json.loads((working / "tokenizer_config.json").read_text())
    (folder / "evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    auto = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel",
            "AutoTokenizer": ["evil.EvilTokenizer", None]}
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": auto}))
    (folder / "tokenizer_config.json").write_text(json.dumps({**tok_config, "auto_map": {"AutoTokenizer": auto["AutoTokenizer"]}}))
    return folder


class Listener:
    """An OpenAI-compatible stub on 127.0.0.1 that records every request it receives.

    It answers chat and completion requests with a reply the span locator and the judges can
    parse, so a command that does reach it finishes instead of hanging on retries.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append({"path": self.path, "body": body.decode("utf-8", "replace")})
                content = '{"answer": "Paris"}'
                reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                      "text": " Paris", "finish_reason": "stop"}]}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def verify_request(self, request: Any, client_address: Any) -> bool:
                outer.connections += 1
                return True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def received(self) -> int:
        return self.connections + len(self.requests)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_subprocess(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter, importing ``hneurons`` from where this process does."""
    import hneurons

    src = str(Path(hneurons.__file__).resolve().parents[1])
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HNEURONS_", "HF_"))}
    full = {**base, "PYTHONPATH": src + os.pathsep + base.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1",
            "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "hneurons.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=full)
