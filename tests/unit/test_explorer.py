"""The neuron explorer (report section ``explorer``) on hand-made data.

A copy of tests/fixtures/run_fixture is shrunk to a 2-layer × 4-neuron model and given a feature
store and labelled responses written here, so every mean, interval, ranking and highlight below is
computed by hand (or by SciPy's t quantile) from the numbers in this file, never by the code under test.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import save_file

from hneurons.report import render_report
from hneurons.report.build_explorer import explorer
from hneurons.report.explorer import class_mean_ci, highlight, top_answers
from hneurons.report.run import open_run
from hneurons.rundir import file_sha256

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "run_fixture"
D_FF = 4
# H-Neurons: flat columns 1*4+2 = 6 (L1.N2) and 0*4+3 = 3 (L0.N3)
NEURONS = [{"layer": 1, "neuron": 2, "weight": 2.5}, {"layer": 0, "neuron": 3, "weight": 0.75}]
# qid: (label, response, span, CETT of L1.N2, CETT of L0.N3); train holds q1-q4, heldout q5-q6
ITEMS = {
    "q1": (0, "Paris is the capital.", "Paris", 1.0, 0.0),
    "q2": (0, "It is Rome.", "Rome", 2.0, 0.5),
    "q3": (0, "Cairo.", "Cairo", 3.0, 0.25),
    "q4": (1, "The answer is <script>x</script>.", "<script>x</script>", 8.0, -1.0),
    "q5": (1, "I think Lyon.", "Lyon", 4.0, 0.0),
    "q6": (1, "Probably Nice.", "Madrid", 6.0, 0.0),  # the span is not in the text
}
SPLIT = {"train": ["q1", "q2", "q3", "q4"], "heldout": ["q5", "q6"]}


def _store(path: Path, qids: list[str]) -> None:
    shutil.rmtree(path, ignore_errors=True)  # the fixture's own store, replaced by the hand-made one
    path.mkdir(parents=True)
    arr = np.zeros((len(qids), 2 * D_FF), dtype=np.float16)
    for i, q in enumerate(qids):
        arr[i, 6], arr[i, 3] = ITEMS[q][3], ITEMS[q][4]
    save_file({"answer": arr, "other": np.zeros_like(arr)}, str(path / "chunk_00000.safetensors"))
    (path / "index.json").write_text(json.dumps({
        "qids": qids, "n": len(qids), "n_neurons": 2 * D_FF, "d_ff": D_FF, "n_layers": 2, "regions": ["answer", "other"],
        "dtype": "float16", "chunks": ["chunk_00000.safetensors"], "complete": True,
        "sha256": {"chunk_00000.safetensors": file_sha256(path / "chunk_00000.safetensors")}}))


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.fixture
def run(tmp_path: Path) -> Path:
    root = tmp_path / "run"
    shutil.copytree(FIXTURE, root)
    _edit(root / "manifest.json", lambda m: m["model"].update(n_layers=2, d_ff=D_FF, n_neurons=2 * D_FF))
    _edit(root / "probe" / "h_neurons.json", lambda h: h.update(neurons=NEURONS, n_positive=2, n_neurons_total=8,
                                                                 by_layer={"0": 1, "1": 1}))
    _edit(root / "probe" / "stability.json", lambda s: s.update(n_resamples=4, frequency=[
        {"layer": 1, "neuron": 2, "freq": 0.75}, {"layer": 1, "neuron": 0, "freq": 0.25}]))
    for split, qids in SPLIT.items():
        _store(root / "features" / split, qids)
    rows = [{"qid": q, "question": f"question {q}?", "response": r, "label": lab, "span_text": sp}
            for q, (lab, r, sp, _, _) in ITEMS.items()]
    pq.write_table(pa.Table.from_pylist(rows), root / "responses" / "labelled.parquet")
    return root


def test_class_mean_ci_is_the_student_t_interval() -> None:
    mean, lo, hi, n = class_mean_ci(np.array([1.0, 2.0, 3.0, 4.0]))
    half = 3.182446305284263 * np.sqrt(5 / 3) / 2  # t(0.975, 3) * sd / sqrt(4); sd² = 5/3
    assert (mean, n) == (2.5, 4) and lo == pytest.approx(2.5 - half) and hi == pytest.approx(2.5 + half)
    one = class_mean_ci(np.array([7.0]))
    assert one[0] == 7.0 and np.isnan(one[1]) and one[3] == 1
    assert class_mean_ci(np.array([]))[3] == 0


def test_top_answers_rank_within_the_class_and_break_ties_by_qid() -> None:
    qids, vals = ["a", "b", "c", "d", "e"], np.array([1.0, 5.0, 5.0, 9.0, np.nan])
    labels = {"a": 0, "b": 0, "c": 0, "d": 1, "e": 0}
    assert top_answers(vals, qids, labels, 0, 2) == [("b", 5.0), ("c", 5.0)]
    assert top_answers(vals, qids, labels, 1, 3) == [("d", 9.0)]


def test_highlight_marks_the_span_with_the_clipped_strength() -> None:
    assert highlight("It is Rome.", "Rome", 0.5) == [("It is ", None), ("Rome", 0.5), (".", None)]
    assert highlight("Rome", "Rome", 3.0) == [("Rome", 1.0)]
    assert highlight("Rome", "Rome", -2.0) == [("Rome", 0.0)]
    assert highlight("Nice.", "Madrid", 0.25) == [("Nice.", None), (" … answer span: ", None), ("Madrid", 0.25)]
    assert highlight("Nice.", "", 0.25) == [("Nice.", None)]


def test_cards_match_the_hand_made_numbers(run: Path) -> None:
    d = explorer(open_run(run))
    assert (d["n_total"], d["n_shown"], d["cett_reason"], d["freq_reason"]) == (2, 2, None, None)
    first, second = d["cards"]
    assert (first["label"], first["id"], first["freq"], first["weight"]) == ("L1.N2", "neuron-L1.N2", "0.75", "2.5000")
    assert second["label"] == "L0.N3" and second["freq"] == "0.00"  # never selected in a resample
    faithful, halluc = first["classes"]
    assert faithful["mean"] == "2.0000" and faithful["n"] == 3  # (1 + 2 + 3) / 3
    assert halluc["mean"] == "6.0000" and halluc["n"] == 3  # (8 + 4 + 6) / 3
    half = 4.302652729911275 * 2 / np.sqrt(3)  # t(0.975, 2) * sd (= 2 for 8, 4, 6) / sqrt(3)
    assert halluc["ci"] == f"[{6 - half:.4f}, {6 + half:.4f}]"
    assert [a["qid"] for a in faithful["answers"]] == ["q3", "q2", "q1"]
    assert [a["qid"] for a in halluc["answers"]] == ["q4", "q6", "q5"]
    # strength = activation / the neuron's largest |activation| (8)
    assert halluc["answers"][2]["segments"] == [("I think ", None), ("Lyon", 0.5), (".", None)]
    assert faithful["answers"][2]["segments"][0] == ("Paris", 0.125)
    link = d["index"].rows[0][0]
    assert (link.text, link.href) == ("L1.N2", "neuron-L1.N2")


def test_page_links_every_listed_neuron_to_its_card_and_escapes_answers(run: Path) -> None:
    html = render_report(run)
    ids = set(re.findall(r'id="(neuron-[^"]+)"', html))
    assert ids == {"neuron-L1.N2", "neuron-L0.N3"}
    links = set(re.findall(r'href="#(neuron-[^"]+)"', html))
    assert links == ids  # the probe section's list and the explorer's index both link, to cards that exist
    assert '<a href="#explorer">' in html and 'href="#neuron-L1.N2"' in html.split('id="explorer"')[0]
    assert "<script>x</script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    assert '<mark style="background: rgba(213, 94, 0, 1.0)">' in html  # q4, the strongest answer
    for attr in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert not re.match(r"(?i)(https?:)?//", attr), attr


def test_missing_parts_become_reasons(run: Path) -> None:
    (run / "probe" / "stability.json").unlink()
    shutil.rmtree(run / "features" / "heldout")
    d = explorer(open_run(run))
    assert "stability.json is missing" in d["freq_reason"] and d["cards"][0]["freq"] == "—"
    assert d["cett_reason"] is None and d["cards"][0]["classes"][1]["n"] == 1  # train only: q4
    (run / "responses" / "labelled.parquet").unlink()
    d = explorer(open_run(run))
    assert "labelled.parquet is missing" in d["cett_reason"] and d["cards"][0]["classes"] == []
    html = render_report(run)
    assert "Mean CETT and top answers: not run: responses/labelled.parquet is missing" in html


def test_a_damaged_chunk_is_named_not_read(run: Path) -> None:
    chunk = run / "features" / "train" / "chunk_00000.safetensors"
    data = bytearray(chunk.read_bytes())
    data[-3] ^= 0xFF  # one byte of the last value
    chunk.write_bytes(bytes(data))
    d = explorer(open_run(run))
    assert "does not match the sha256" in d["cett_reason"] and "hneurons features" in d["cett_reason"]
    assert len(d["cards"]) == 2 and d["cards"][0]["classes"] == []


def test_no_neurons_says_not_run(run: Path) -> None:
    _edit(run / "probe" / "h_neurons.json", lambda h: h.update(neurons=[], n_positive=0))
    assert "Neuron explorer</h2>\n<p class=\"notrun\">not run: the probe selected no H-Neurons" in render_report(run)
