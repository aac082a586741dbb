"""The report's sections for files other stages are adding (intervene/qa.json, probe/c_rules.json,
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


def test_qa_section_shows_every_set_rate_and_flip(run: Path) -> None:
    qa = json.loads((run / "intervene" / "qa.json").read_text())
    body = _section(render_report(run), "qa")
    assert "not run" not in body and body.count('<img class="fig"') == 1
    for name in qa["sets"]:
        assert f"<h3>{name}: held-out {name} questions</h3>" in body
    rec = qa["sets"]["nonexist"]["H"]["0.0"]  # fabricated (not wrong) on NonExist, in % with its CI
    lo, hi = rec["fabricated_ci"]
    assert f"{100 * rec['fabricated']:.1f} <span class=\"note\">[{100 * lo:.1f}, {100 * hi:.1f}]</span>" in body
    assert "Who wrote Middlemarch?" in body and "wrong: Charlotte Brontë." in body and "refusal: I am not sure." in body
    tq = json.loads(CARD.read_text())["judges"]["triviaqa"]
    assert f"{100 * tq['agreement']:.1f}%" in body.split("<h3>triviaqa")[1].split("</p>")[0]


def test_c_rules_table_and_claim_notes(run: Path) -> None:
    before = _badges(run)
    html = render_report(run)
    probe = _section(html, "probe")
    assert "<code>paper</code> <span class=\"note\">(chose this run&#39;s neurons)</span>" in probe
    assert "off: only 4 correct answers at α = 1" in probe and "[9, 21] over 20 resamples" in probe
    by_name = {c.name: c for c in claims(run)}
    exist = next(c for n, c in by_name.items() if "exist" in n.lower())
    detect = next(c for n, c in by_name.items() if "detect" in n.lower())
    assert "The neurons come from the C rule 'paper'." in exist.text
    assert "cv1se: holds (6 neurons)" in exist.text
    assert "stability: does not hold (4 neurons, AUROC 0.550)" in detect.text
    (run / "probe" / "c_rules.json").unlink()
    assert _badges(run) == before  # the record adds words, never moves a badge
    assert "C rule" not in " ".join(c.text for c in claims(run))
    assert "Other C rules: not run: probe/c_rules.json is missing" in _section(render_report(run), "probe")


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
    path.write_text(json.dumps({"sets": {"triviaqa": {"H": {"0.0": {"accuracy": "x"}}}}}))
    body = _section(render_report(run), "qa")  # a non-number is a gap in its cell, not a crash
    assert "<h3>triviaqa</h3>" in body and "<td class=\"num\">— </td>" not in body and "—" in body
    path.write_text("[1, 2]")
    assert "not run: intervene/qa.json is not a JSON object" in _section(render_report(run), "qa")
    path.unlink()
    html = render_report(run)
    assert "not run: intervene/qa.json is missing" in _section(html, "qa")
    assert "not run" not in _section(html, "intervene") and _badges(run) == before
