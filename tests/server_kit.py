"""What the server tests and ``benchmarks/serve.py`` share: a synthetic run, and a server that always stops.

:func:`synthetic_run` writes a run directory whose probe has random weights on a few neurons of
the loaded model (the serving path is under test, not the probe). :func:`served` runs an app on
real uvicorn in a thread; :func:`serve_process` starts ``hneurons serve`` as a user does. Both
take a free port, wait until the server answers and stop it however the caller's block ends, so
no test or benchmark leaves a server (or its port) behind.
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from hneurons.config import load_config
from hneurons.probe.estimator import HNeuronProbe
from hneurons.rundir import RunDir


def synthetic_run(root: Path, loaded: Any, max_new_tokens: int, neurons: int = 24) -> Path:
    """A run directory after the probe stage whose probe weighs ``neurons`` random neurons (N(0, 20)).

    ``neurons=0`` gives an all-zero probe: no H-Neurons, so guarded generation records and scores nothing.
    """
    n = loaded.layout.n_neurons
    rng = np.random.default_rng(0)
    probe = HNeuronProbe(C=0.01, d_ff=loaded.layout.d_ff)
    coef = np.zeros(n)
    coef[rng.choice(n, neurons, replace=False)] = rng.normal(0, 20, neurons)
    probe.coef_, probe.intercept_, probe.classes_, probe.n_features_in_ = coef, -1.0, np.array([0, 1]), n
    probe.save(root / "probe" / "probe.safetensors")
    cfg = load_config("default", overrides={"responses.max_new_tokens": max_new_tokens})
    (root / "manifest.json").write_text(json.dumps({"config": cfg.to_dict(), "model": {"fingerprint": loaded.fingerprint}}))
    (root / "probe" / "h_neurons.json").write_text(json.dumps({"model_fingerprint": loaded.fingerprint, "neurons": []}))
    RunDir(root).mark_done("probe", "fp", 0.0)  # a probe is used only with the marker that vouches for it
    return root


@contextmanager
def served(app: Any, timeout_s: float = 300) -> Iterator[str]:
    """``app`` on real uvicorn in a daemon thread; yields its base URL (``http://127.0.0.1:PORT``).

    The socket is bound first, as ``hneurons serve`` binds it, so the port is ours before uvicorn starts.
    """
    import uvicorn

    from hneurons.apply.server import bind_socket  # here: a synthetic run needs no server packages

    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


@contextmanager
def serve_process(*args: str, env: dict[str, str] | None = None, timeout_s: float = 300) -> Iterator[tuple[str, list[int]]]:
    """``hneurons serve ARGS --port 0`` in a child process; yields (base URL, /health codes seen while loading).

    The URL is read from the CLI's first stderr line. The rest of stderr (the request log by default)
    is drained in a thread, since a full pipe would stall the server, and its tail is kept for errors.
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "hneurons.cli.main", "serve", *args, "--port", "0"],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
        if not found:
            raise RuntimeError(f"hneurons serve did not say where it listens: {line!r}")
        tail: collections.deque[str] = collections.deque(maxlen=40)
        threading.Thread(target=tail.extend, args=(proc.stderr,), daemon=True).start()
        url = f"http://127.0.0.1:{found.group(1)}"
        yield url, _wait_ready(url, proc, timeout_s, tail)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float, tail: collections.deque[str]) -> list[int]:
    """Poll /health until 200; the codes seen before (503 while the model loads) are returned."""
    statuses, deadline = [], time.monotonic() + timeout_s
    while (code := httpx.get(url + "/health", timeout=10).status_code) != 200:
        statuses.append(code)
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"hneurons serve never became ready (/health: {statuses}); stderr: {''.join(tail)}")
        time.sleep(0.2)
    return statuses
