"""The report's sections for files other stages write (intervene/qa.json, probe/rules.json,
the judge card beside the numbers), on copies of tests/fixtures/run_fixture.

Expected strings come from the fixture's files (read here) or the packaged judge card, never from
the code under test; each file is also removed and broken to show the section says "not run" and
that the existing claim badges do not move.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from hneurons.report import claims, render_report

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "run_fixture"
CARD = Path(__file__).resolve().parents[2] / "src" / "hneurons" / "data" / "files" / "judge_validation" / "judge_card.json"


@pytest.fixture
def run(tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(FIXTURE, dst)
    return dst


def _section(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', html, re.S)
    assert m, sid
    return m.group(1)


def _badges(run: Path) -> list[tuple[str, str]]:
    return [(c.name, c.badge) for c in claims(run)]


def _cell(rate: dict) -> str:
    lo, hi = rate["ci"]
    return f"{100 * rate['rate']:.1f} <span class=\"note\">[{100 * lo:.1f}, {100 * hi:.1f}]</span>"


def test_qa_section_shows_every_set_rate_transition_and_flip(run: Path) -> None:
    qa = json.loads((run / "intervene" / "qa.json").read_text())
    body = _section(render_report(run), "qa")
    assert "not run" not in body and body.count('<img class="fig"') == 1
    for name in qa["sets"]:
        assert f"<h3>{name}: " in body
    tq = body.split("<h3>triviaqa")[1].split("<h3>")[0]
    ne = body.split("<h3>nonexist")[1].split("<h3>")[0]
    # accuracy = rates.correct on the QA sets; fabricated (not wrong, not correct) on NonExist; % with the CI
    assert "correct (accuracy) % [95% CI]" in tq and _cell(qa["rates"]["triviaqa"]["H"]["1.0"]["rates"]["correct"]) in tq
    assert "fabricated % [95% CI]" in ne and "correct (accuracy)" not in ne and "<th class=\"num\">wrong" not in ne
    assert _cell(qa["rates"]["nonexist"]["H"]["0.0"]["rates"]["fabricated"]) in ne
    assert _cell(qa["rates"]["nonexist"]["random"]["3.0"]["rates"]["hallucinated"]) in ne
    moved = qa["transitions"]["triviaqa"]["H"]["0.0"]["wrong->refusal"]
    assert f"wrong → refusal: {moved}" in body
    assert "Who wrote Middlemarch?" in body and "wrong: Charlotte Brontë." in body and "refusal: I am not sure." in body
    card = json.loads(CARD.read_text())["judges"]["triviaqa"]
    assert f"{100 * card['agreement']:.1f}%" in tq.split("</p>")[0]


def test_qa_benchmark_is_not_a_compliance_benchmark(run: Path) -> None:
    ivp = run / "intervene" / "intervene.json"
    iv = json.loads(ivp.read_text())
    assert iv["benchmarks"]["qa"]["family"] == "qa"
    html = render_report(run)
    body = _section(html, "intervene")
    assert "<h3>qa</h3>" not in body and "<tr><td>qa</td>" not in body and "shown in the\nQA ablation section" in body
    impact = next(c for c in claims(run) if c.name.startswith("Impact"))
    assert "qa" not in re.findall(r"\w+", f"{impact.text} {impact.outcome} {impact.scope}")
    iv["benchmarks"]["qa"]["slope"] = {"H": 0.9, "random": 0.0, "H_ci": [0.8, 1.0]}  # would be "held" if counted
    ivp.write_text(json.dumps(iv))
    assert next(c for c in claims(run) if c.name.startswith("Impact")) == impact
    del iv["benchmarks"]["qa"]
    ivp.write_text(json.dumps(iv))
    assert next(c for c in claims(run) if c.name.startswith("Impact")) == impact


def test_rules_table_and_claim_notes(run: Path) -> None:
    path = run / "probe" / "rules.json"
    rules = json.loads(path.read_text())
    before = _badges(run)
    probe = _section(render_report(run), "probe")
    assert "<code>paper</code> <span class=\"note\">(chose this run&#39;s neurons)</span>" in probe
    assert "[9, 21] over 5 resamples" in probe
    assert "suppression term off (the unsuppressed model answers 4 of 100 questions correctly" in probe
    st = rules["rules"]["stability"]
    bound = st["details"]["expected_false_bound"][st["details"]["Cs"].index(st["C"])]
    assert f"expected false selections ≤ {bound:.2f} (limit 1.00)" in probe
    assert f"<td class=\"num\">{100 * st['heldout_acc']:.1f}</td><td class=\"num\">{st['heldout_auroc']:.3f}</td>" in probe
    by_name = {c.name: c for c in claims(run)}
    exist = next(c for n, c in by_name.items() if "exist" in n.lower())
    detect = next(c for n, c in by_name.items() if "detect" in n.lower())
    assert "The neurons come from the C rule 'paper'." in exist.text
    assert "cv1se: holds (6 neurons)" in exist.text
    assert f"stability: AUROC {st['heldout_auroc']:.3f} (4 neurons)" in detect.text
    # a rule that could not be computed, one under which existence fails (as the producer writes them)
    rules["rules"]["cv1se"] = {"C": None, "existence_holds": None,
                               "details": {"C": None, "not_computed": "probe.cv_folds=5: need 2 <= folds <= 3"}}
    st.update({"n_positive": 0, "ratio_per_mille": 0.0, "existence_holds": False})
    rules["existence_holds_under_others"] = False
    path.write_text(json.dumps(rules))
    probe = _section(render_report(run), "probe")
    assert "not computed: probe.cv_folds=5: need 2 &lt;= folds &lt;= 3" in probe
    assert "Under the other rules the existence claim does not hold." in probe
    exist = next(c for c in claims(run) if "exist" in c.name.lower())
    assert "cv1se: not computed; stability: does not hold (0 neurons)" in exist.text
    path.unlink()
    assert _badges(run) == before  # the record adds words, never moves a badge
    assert "C rule" not in " ".join(c.text for c in claims(run))
    assert "Other C rules: not run: probe/rules.json is missing" in _section(render_report(run), "probe")


def test_judge_agreement_beside_the_slopes_and_detection(run: Path) -> None:
    card = json.loads(CARD.read_text())["judges"]
    html = render_report(run)
    iv = _section(html, "intervene")
    row = re.search(r"<tr><td>falseqa</td>.*?</tr>", iv, re.S).group(0)
    assert f"{100 * card['falseqa']['agreement']:.1f}%" in row
    assert f"{100 * card['triviaqa']['agreement']:.1f}%" in _section(html, "detect")


def test_missing_or_malformed_qa_says_not_run(run: Path) -> None:
    before = _badges(run)
    path = run / "intervene" / "qa.json"
    path.write_text(json.dumps({"sets": ["triviaqa"], "rates": {"triviaqa": {"H": {"0.0": {"n": 3, "counts": {"x": 1},
                                                                                    "rates": {"correct": {"rate": "x"}}}}}}}))
    body = _section(render_report(run), "qa")  # a non-number is a gap in its cell, not a crash
    assert "<h3>triviaqa: " in body and "<td class=\"num\">— </td>" not in body and "—" in body
    path.write_text("[1, 2]")
    assert "not run: intervene/qa.json is not a JSON object" in _section(render_report(run), "qa")
    path.unlink()
    html = render_report(run)
    assert "not run: intervene/qa.json is missing" in _section(html, "qa")
    assert "not run" not in _section(html, "intervene") and _badges(run) == before
