"""`hneurons compare` on real runs of both embedded models, checked without a browser.

What `make compare` does, made cheaper: the smoke preset on SmolLM2-135M-Instruct (chat) runs
whole; the one on Gemma-3-270M (base model, plain prompts) stops after the probe, so the page must
also show its missing stages as "not run". The page must load nothing from the network (no
http(s) URL in any src/href) and embed every figure as a data: URI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def _cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hneurons.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict:
    runs = tmp_path_factory.mktemp("runs")
    smol = _cli("run", "--preset", "smoke", "--name", "smoke-smollm", "--runs", str(runs))
    assert smol.returncode == 0, smol.stderr[-3000:]
    gemma = _cli("run", "--preset", "smoke", "--model", "gemma-3-270m", "--name", "smoke-gemma", "--runs", str(runs),
                 "--stage", "responses", "--stage", "features", "--stage", "probe")
    assert gemma.returncode == 0, gemma.stderr[-3000:]
    out = runs / "compare.html"
    cmp = _cli("compare", str(runs / "smoke-smollm"), str(runs / "smoke-gemma"), "-o", str(out), "--json", timeout=600)
    assert cmp.returncode == 0, cmp.stderr[-3000:]
    return {"html": out.read_text(), "json": json.loads(cmp.stdout), "runs": runs}


def test_page_is_self_contained(pages: dict) -> None:
    html = pages["html"]
    for attr in re.findall(r'(?:src|href)\s*=\s*["\']?([^"\'\s>]*)', html):
        assert not re.match(r"(?i)(https?:)?//", attr), attr
    imgs = re.findall(r"<img\b[^>]*>", html)
    assert imgs and all(re.search(r'\bsrc="data:image/png;base64,[A-Za-z0-9+/=]+"', i) for i in imgs)


def test_both_runs_have_columns_and_missing_stages_say_not_run(pages: dict) -> None:
    html, data = pages["html"], pages["json"]
    assert [r["name"] for r in data["runs"]] == ["smoke-smollm", "smoke-gemma"]
    assert "<th>smoke-smollm</th>" in html and "<th>smoke-gemma</th>" in html
    smol, gemma = data["runs"]
    assert smol["model"]["n_neurons"] == 30 * 1536 and gemma["model"]["n_neurons"] == 18 * 2048
    assert smol["probe"]["status"] == "done" and gemma["probe"]["status"] == "done"
    assert gemma["detect"]["status"] == "not run" and gemma["intervene"]["status"] == "not run"
    assert smol["detect"]["status"] == "done" and smol["intervene"]["status"] == "done"
    assert gemma["prompt_format"] == "plain" and smol["prompt_format"] == "chat"
    assert html.count('class="notrun"') >= 2 and "not run" in html
    assert data["overlaps"] == []  # two models: no neuron-by-neuron overlap
    assert sum(smol["probe"]["depth_hist"]) == smol["probe"]["n_selected"]
