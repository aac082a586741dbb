"""Tier 3: the main job end to end (`hneurons run --preset smoke`), interrupted and resumed.

The run is started, interrupted (SIGINT) once the responses stage has flushed samples, and
started again with the same command: it must finish, keep every sample written before the
interruption without duplicating any, and produce every stage's outputs and the report. A third
invocation must skip every stage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CMD = [sys.executable, "-m", "hneurons.cli.main", "run", "--preset", "smoke", "--name", "smoke"]


def _run(runs: Path, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, "--runs", str(runs)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _interruptible() -> None:
    """In the child: SIGINT back to its default, so Python turns it into KeyboardInterrupt.

    A test session started in the background by a non-interactive shell (`make test &`, nohup)
    inherits SIGINT as ignored, and Python then leaves it ignored: the run would not stop.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    runs = tmp_path_factory.mktemp("runs")
    log = runs / "smoke" / "responses" / "samples.jsonl"
    proc = subprocess.Popen([*CMD, "--runs", str(runs)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, preexec_fn=_interruptible)
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and log.stat().st_size > 0:
            break
        time.sleep(0.5)
    interrupted = proc.poll() is None
    if interrupted:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    before = log.read_text().splitlines() if log.is_file() else []
    t0 = time.time()
    second = _run(runs)
    seconds = time.time() - t0
    third = _run(runs, timeout=600)
    return {"root": runs / "smoke", "interrupted": interrupted, "before": before, "second": second,
            "third": third, "seconds": seconds}


def test_resumed_run_finishes_without_losing_or_duplicating_work(smoke_run: dict) -> None:
    second = smoke_run["second"]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    lines = (smoke_run["root"] / "responses" / "samples.jsonl").read_text().splitlines()
    assert smoke_run["interrupted"], "the run finished before it could be interrupted"
    assert smoke_run["before"], "nothing was flushed before the interruption"
    complete = [ln for ln in smoke_run["before"] if ln.endswith("}")]
    assert lines[: len(complete)] == complete  # work done before the interruption is kept as is
    keys = Counter((r["qid"], r["phase"], r["sample"]) for r in map(json.loads, lines))
    assert max(keys.values()) == 1  # and nothing was sampled twice


def test_every_stage_wrote_its_outputs(smoke_run: dict) -> None:
    root = smoke_run["root"]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["model"]["n_neurons"] == 46080 and manifest["model"]["fingerprint"]
    assert manifest["config"]["responses"]["dataset"] == "smoke_qa"
    stages = manifest["stages"]
    for stage in ("responses", "features", "probe", "detect", "intervene", "report"):
        assert stages[stage]["status"] == "done", (stage, stages[stage])
    assert stages["origin"]["status"] == "not run" and "base model" in stages["origin"]["reason"]
    for rel in ("responses/responses.parquet", "responses/labelled.parquet", "responses/splits.json",
                "responses/stats.json", "features/train/index.json", "probe/probe.safetensors",
                "probe/h_neurons.json", "probe/path.json", "detect/detect.json", "detect/scores.csv",
                "intervene/intervene.json", "intervene/generations.parquet", "origin/origin.json", "report.html"):
        assert (root / rel).is_file(), rel
    stats = json.loads((root / "responses" / "stats.json").read_text())
    assert stats["kept"]["faithful"] >= 2 and stats["kept"]["hallucinated"] >= 2
    assert sum(stats["correct_count_hist"]) == stats["questions_sampled"]
    h = json.loads((root / "probe" / "h_neurons.json").read_text())
    assert h["n_positive"] == len(h["neurons"]) and h["ratio_per_mille"] == pytest.approx(h["n_positive"] / 46.080)
    splits = json.loads((root / "responses" / "splits.json").read_text())
    train = set(splits["train"]["0"] + splits["train"]["1"])
    assert not train & set(splits["heldout"]["0"] + splits["heldout"]["1"])
    html = (root / "report.html").read_text()
    assert "not run" in html and "http://" not in html and "https://" not in html


def test_rerun_skips_finished_stages(smoke_run: dict) -> None:
    third = smoke_run["third"]
    assert third.returncode == 0, third.stderr[-3000:]
    out = third.stdout + third.stderr
    for stage in ("responses", "features", "probe", "detect", "intervene", "report"):
        assert f"[{stage}] up to date" in out, stage


def test_score_reproduces_detection_auroc(smoke_run: dict) -> None:
    """`hneurons.score` on the detection items gives detect.json's AUROC: it finds the same answer
    spans by itself (the run's label-blind locator, no span passed in) and applies the same probe."""
    import numpy as np
    import pyarrow.parquet as pq

    from hneurons.apply.score import score
    from hneurons.stats import auroc

    root = smoke_run["root"]
    detect = json.loads((root / "detect" / "detect.json").read_text())
    name = next(n for n in ("smoke", "triviaqa", "nq_open", "bioasq") if n in detect["sets"])
    rows = [r for r in pq.read_table(root / "detect" / f"items_{name}.parquet").to_pylist() if r["balanced"]]
    results = score(root, [{"id": r["qid"], "question": r["question"], "answer": r["response"]} for r in rows])
    assert all(r["span_status"] == "ok" for r in results)
    assert [r["span"]["text"] for r in results] == [r["span_text"] for r in rows]
    got = auroc(np.array([r["label"] for r in rows]), np.array([r["p_hallucination"] for r in results]))
    assert got == pytest.approx(detect["sets"][name]["methods"]["h_neurons_full_l1"]["auroc"], abs=1e-9)


def test_outputs_match_the_golden_fixture(smoke_run: dict) -> None:
    """Kept records, H-Neurons, detection and intervention numbers equal the recorded smoke run.

    This guards every refactor: behaviour must not change. Update the fixture only in a commit
    that says why the numbers changed (``tests/golden.py`` says how)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import golden

    got = golden.summarize(smoke_run["root"])
    fixture = golden.fixture_for(got["dtype"])
    if not fixture.is_file():
        pytest.fail(f"no golden fixture for {got['dtype']} weights ({fixture}); record one with tests/golden.py")
    diffs = golden.compare(got, json.loads(fixture.read_text()))
    assert not diffs, f"{len(diffs)} difference(s) from {fixture.name}:\n" + "\n".join(diffs[:20])


def test_readme_python_example_runs_as_written(smoke_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Python block, run in a directory whose runs/smoke is this smoke run (so run_all resumes it)."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert len(blocks) == 1, "the README has one Python example"
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "smoke").symlink_to(smoke_run["root"], target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README, the point of the test
    assert namespace["X"].shape == (2, 46080)
    assert all(r["p_hallucination"] is not None for r in namespace["rows"])
