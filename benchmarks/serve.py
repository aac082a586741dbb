"""Latency and throughput of `hneurons serve` on the embedded model: 1 vs 16 concurrent clients, guarded vs not.

"Guarded" uses a synthetic probe with 24 non-zero neurons, so CETT is recorded and the answer is scored.
"Unguarded" uses an all-zero probe, so there are no hooks and no scoring, on the same server path. Both servers
run in this process on real uvicorn. The last line is one JSON object.

    python benchmarks/serve.py --requests 16 --tokens 8
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import uvicorn  # noqa: E402

from hneurons.apply.server import bind_socket, create_app  # noqa: E402
from hneurons.apply.state import load_state  # noqa: E402
from hneurons.config import load_config  # noqa: E402
from hneurons.core.models import load_model  # noqa: E402
from hneurons.probe.estimator import HNeuronProbe  # noqa: E402
from hneurons.rundir import RunDir  # noqa: E402


def _run(root: Path, loaded, nonzero: int, tokens: int) -> Path:
    n = loaded.layout.n_neurons
    probe = HNeuronProbe(C=0.01, d_ff=loaded.layout.d_ff)
    coef = np.zeros(n)
    if nonzero:
        coef[np.random.default_rng(0).choice(n, nonzero, replace=False)] = 5.0
    probe.coef_, probe.intercept_, probe.classes_, probe.n_features_in_ = coef, -1.0, np.array([0, 1]), n
    probe.save(root / "probe" / "probe.safetensors")
    cfg = load_config("default", overrides={"responses.max_new_tokens": tokens})
    (root / "manifest.json").write_text(json.dumps({"config": cfg.to_dict(), "model": {"fingerprint": loaded.fingerprint}}))
    (root / "probe" / "h_neurons.json").write_text(json.dumps({"model_fingerprint": loaded.fingerprint, "neurons": []}))
    RunDir(root).mark_done("probe", "fp", 0.0)
    return root


def _measure(url: str, requests: int, clients: int, tokens: int) -> dict:
    def one(i: int) -> float:
        t = time.perf_counter()
        r = httpx.post(url, timeout=600, json={"messages": [{"role": "user", "content": f"Name a famous city number {i}."}],
                                               "max_tokens": tokens, "temperature": 0})
        assert r.status_code == 200, r.text
        return time.perf_counter() - t

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        lat = sorted(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    return {"clients": clients, "p50_s": round(lat[len(lat) // 2], 3), "max_s": round(lat[-1], 3),
            "req_per_s": round(requests / wall, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=8)
    args = ap.parse_args()
    loaded = load_model(None, dtype="float32", device="cpu")
    out = {"cpus": os.cpu_count(), "tokens": args.tokens, "requests": args.requests}
    for name, nonzero in (("unguarded", 0), ("guarded", 24)):
        root = _run(Path(tempfile.mkdtemp()), loaded, nonzero, args.tokens)
        app = create_app(load_state(root, model=loaded), max_batch=16, batch_wait_s=0.05)
        sock = bind_socket("127.0.0.1", 0)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/chat/completions"
        _measure(url, 2, 1, args.tokens)  # warm-up
        out[name] = [_measure(url, args.requests, c, args.tokens) for c in (1, 16)]
        server.should_exit = True
        thread.join(60)
        sock.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
