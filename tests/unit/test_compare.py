"""`hneurons compare` on the synthetic run directory (tests/fixtures/run_fixture) and copies of it.

Expected values are read from the fixture's files or computed by hand here, never from the code
under test: Jaccard from two hand-made neuron sets, slopes ×100, depth bins as layer // 3 (30 layers,
10 bins: (layer + 0.5) / 30 × 10 floors to layer // 3).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

from hneurons.compare import compare_runs, write_page
from hneurons.errors import DataError

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "run_fixture"
CARD = Path(__file__).resolve().parents[2] / "src" / "hneurons" / "data" / "files" / "judge_validation" / "judge_card.json"


def _copy(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(FIXTURE, dst)
    return dst


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _h(run: Path) -> dict:
    return json.loads((run / "probe" / "h_neurons.json").read_text())


def test_one_run_summary_matches_the_files(tmp_path: Path) -> None:
    a, b = _copy(tmp_path, "a"), _copy(tmp_path, "b")
    cmp = compare_runs([a, b])
    r = cmp["runs"][0]
    h = _h(a)
    assert r["probe"]["status"] == "done"
    assert (r["probe"]["n_selected"], r["probe"]["n_total"], r["probe"]["C"]) == (14, 46080, 0.05)
    assert r["probe"]["per_mille"] == pytest.approx(14 / 46.080, abs=1e-6)  # the fixture rounds to 6 places
    by_bin = Counter(n["layer"] // 3 for n in h["neurons"])
    assert r["probe"]["depth_hist"] == [by_bin.get(i, 0) for i in range(10)]
    assert r["stability"] == {"status": "done", "n_resamples": 5, "jaccard_mean": 0.4123, "jaccard_std": 0.0871}
    det = json.loads((a / "detect" / "detect.json").read_text())["sets"]["triviaqa"]["methods"]
    got = r["detect"]["sets"]["triviaqa"]
    assert got["h_auroc"] == det["h_neurons"]["auroc"] and got["random_auroc"] == det["random"]["auroc"]
    assert got["h_ci"] == det["h_neurons"]["auroc_ci"] and got["random_ci"] == det["random"]["auroc_ci"]
    assert r["detect"]["skipped"]["nonexist"].startswith("only 4 hallucinated")
    iv = json.loads((a / "intervene" / "intervene.json").read_text())["benchmarks"]["falseqa"]
    assert r["intervene"]["benchmarks"]["falseqa"]["slope_pp"]["H"] == pytest.approx(100 * iv["slope"]["H"])
    assert r["intervene"]["benchmarks"]["falseqa"]["slope_lsq_pp"]["random"] == pytest.approx(100 * iv["slope_lsq"]["random"])
    card = json.loads(CARD.read_text())["judges"]
    qa = next(j for j in r["judges"] if j["use"].startswith("TriviaQA"))
    assert qa["agreement"] == card["triviaqa"]["agreement"] and qa["n"] == card["triviaqa"]["n"]
    assert cmp["sets"]["triviaqa"] == {"runs": ["a", "b"], "shared": True}
    assert r["model"]["fingerprint"] == "3f9a1c0d5e7b2a41" and len(r["run_fingerprint"]) == 16


def test_jaccard_of_two_runs_of_one_model(tmp_path: Path) -> None:
    a, b, other = _copy(tmp_path, "seed0"), _copy(tmp_path, "seed1"), _copy(tmp_path, "other")
    neurons = _h(a)["neurons"]
    new = [{"layer": 3, "neuron": 7, "weight": 1.0}, {"layer": 4, "neuron": 9, "weight": 0.5}]
    _edit(b / "probe" / "h_neurons.json", lambda d: d.update(neurons=neurons[:10] + new, n_positive=12))
    _edit(b / "manifest.json", lambda d: d.update(seed=1) or d["config"].update(seed=1))
    _edit(other / "manifest.json", lambda d: d["model"].update(fingerprint="ffffffffffffffff"))
    cmp = compare_runs([a, b, other])
    assert len(cmp["overlaps"]) == 1  # the third run is another model: no neuron-by-neuron overlap
    o = cmp["overlaps"][0]
    assert (o["a"], o["b"], o["n_a"], o["n_b"], o["n_shared"], o["n_union"]) == ("seed0", "seed1", 14, 12, 10, 16)
    assert o["jaccard"] == pytest.approx(10 / 16)
    assert o["a_fingerprint"] != o["b_fingerprint"]  # the seed differs
    assert o["shared"][0] == "L{layer}.N{neuron}".format(**neurons[0])


def test_missing_and_malformed_stages_say_not_run(tmp_path: Path) -> None:
    a, b = _copy(tmp_path, "full"), _copy(tmp_path, "partial")
    shutil.rmtree(b / "detect")
    _edit(b / "manifest.json", lambda d: d["stages"].update(detect={"status": "not run", "reason": "stopped early"}))
    (b / "probe" / "stability.json").unlink()  # recorded as done, file gone
    _edit(b / "intervene" / "intervene.json", lambda d: d.update(benchmarks=[1, 2]))
    cmp = compare_runs([a, b])
    r = cmp["runs"][1]
    assert r["detect"] == {"status": "not run", "reason": "stopped early"}
    assert r["stability"]["status"] == "not run" and "stability.json" in r["stability"]["reason"]
    assert r["intervene"]["status"] == "not run" and "malformed" in r["intervene"]["reason"]
    assert not any(j["use"].startswith("QA correct") for j in r["judges"])  # detect did not run: no judge row
    page = write_page(cmp, tmp_path / "c.html").read_text()
    assert page.count("not run") >= 3 and "stopped early" in page
    assert cmp["sets"]["triviaqa"]["shared"] is False


def test_page_is_self_contained_and_escaped(tmp_path: Path) -> None:
    a, b = _copy(tmp_path, "run-a"), _copy(tmp_path, "<b>run-b")
    html = write_page(compare_runs([a, b]), tmp_path / "c.html").read_text()
    for attr in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert not attr.startswith(("http://", "https://", "//")), attr
    imgs = re.findall(r"<img[^>]*>", html)
    assert len(imgs) == 3 and all(re.search(r'src="data:image/png;base64,', i) for i in imgs)
    assert "run-a" in html and "&lt;b&gt;run-b" in html and "<b>run-b" not in html
    assert "default-src 'none'" in html


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    from hneurons.cli.main import main

    monkeypatch.setattr(sys, "argv", ["hneurons", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0)


def test_cli_json_and_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _copy(tmp_path, "a"), _copy(tmp_path, "b")
    out = tmp_path / "page.html"
    assert _main(monkeypatch, "compare", str(a), str(b), "-o", str(out), "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in data["runs"]] == ["a", "b"] and data["overlaps"][0]["jaccard"] == 1.0
    assert out.is_file()


@pytest.mark.parametrize("make, words", [
    (lambda t: t / "missing", "is not a run directory"),
    (lambda t: (t / "empty").mkdir() or t / "empty", "no manifest.json"),
    (lambda t: (t / "f.txt").write_text("x") and t / "f.txt", "is not a run directory"),
])
def test_not_a_run_directory_is_one_line_exit_2(make, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(monkeypatch, "compare", str(FIXTURE), str(make(tmp_path)), "-o", str(tmp_path / "c.html")) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0], err
    assert not (tmp_path / "c.html").exists()


def test_one_run_is_refused() -> None:
    with pytest.raises(Exception, match="at least two"):
        compare_runs([FIXTURE])
    with pytest.raises(DataError):
        compare_runs([FIXTURE, FIXTURE / "probe"])
