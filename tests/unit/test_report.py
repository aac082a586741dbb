"""The HTML report, rendered from the fixture run directory (tests/fixtures/run_fixture)."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from hneurons.config import Config
from hneurons.errors import StageError
from hneurons.pipeline import Context, run_stage
from hneurons.report import claims, render_report, write_report
from hneurons.report.sections import SECTIONS as SECTION_TABLE
from hneurons.rundir import RunDir, fingerprint_of
from hneurons.stages import report as report_stage

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_fixture"
SECTIONS = ["summary", "manifest", "responses", "probe", "detect", "risk", "intervene", "origin", "judges"]


class _Tables(HTMLParser):
    """Collects every table as a list of rows of cell texts, plus img src and every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.links: list[str] = []
        self.imgs: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.links += [v for k, v in attrs if k in ("src", "href", "action", "data") and v]
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(text: str) -> _Tables:
    p = _Tables()
    p.feed(text)
    return p


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(FIXTURE, dst, ignore=shutil.ignore_patterns("report.html"))
    return dst


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The fixture run rendered once with real figures, for the read-only checks."""
    dst = tmp_path_factory.mktemp("rendered") / "run"
    shutil.copytree(FIXTURE, dst, ignore=shutil.ignore_patterns("report.html"))
    return dst, write_report(dst).read_text()


@pytest.fixture
def stub_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace the matplotlib figures by a constant image where a test only checks text and logic."""
    from hneurons.report import figures

    for name in figures.__all__:
        monkeypatch.setattr(figures, name, lambda *a, **k: "data:image/png;base64,AA==")


def _j(path: Path) -> dict:
    return json.loads(path.read_text())


def _section(text: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', text, re.S)
    assert m, f"section {sid} missing"
    return m.group(1)


def test_writes_every_section(rendered: tuple[Path, str]) -> None:
    run_dir, text = rendered
    assert (run_dir / "report.html").read_text() == text
    for sid in SECTIONS:
        body = _section(text, sid).replace("nonexist not run: only 4", "")  # the one set the fixture skipped
        assert "not run" not in body, f"{sid} unexpectedly shows not run"
    # 11 figures: histogram, C path, layers, stability, 2 detection, risk-coverage, intervention, qa, transfer, drift
    assert len(_parse(text).imgs) == 11
    assert "0.304" in _section(text, "probe")  # 14 / 46,080 × 1000 = 0.3038‰
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".report.html.*"))


def test_no_external_resources(rendered: tuple[Path, str]) -> None:
    text = rendered[1]
    p = _parse(text)
    assert p.imgs and all(src.startswith("data:image/png;base64,") for src in p.imgs)
    assert all(link.startswith(("#", "data:")) for link in p.links), [x for x in p.links if not x.startswith("#")][:3]
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", text, re.I)
    assert "http://" not in text and "https://" not in text
    assert "url(" not in text and "@import" not in text
    assert ("content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\""
            in text)


def test_detection_table_matches_json(rendered: tuple[Path, str]) -> None:
    det = _j(FIXTURE / "detect" / "detect.json")
    text = _section(rendered[1], "detect")
    tables = [t for t in _parse(text).tables if t and t[0][0] == "method"][:2]  # AUROC, then accuracy
    sets = list(det["sets"])
    for table, metric, scale, nd in ((tables[0], "auroc", 1, 3), (tables[1], "accuracy", 100, 1)):
        assert table[0] == ["method", *sets]
        assert [row[0] for row in table[1:]] == det["methods"]
        for row in table[1:]:
            for s, cell in zip(sets, row[1:]):
                e = det["sets"][s]["methods"][row[0]]
                lo, hi = e[f"{metric}_ci"]
                expected = f"{e[metric] * scale:.{nd}f} [{lo * scale:.{nd}f}, {hi * scale:.{nd}f}]"
                assert cell.startswith(expected), (row[0], s, cell, expected)
    # hand check of one cell: triviaqa h_neurons AUROC
    e = det["sets"]["triviaqa"]["methods"]["h_neurons"]
    assert f"{e['auroc']:.3f} [{e['auroc_ci'][0]:.3f}, {e['auroc_ci'][1]:.3f}]" in text
    assert '<tr class="confound"><td>length</td>' in text
    assert "nonexist not run: only 4 hallucinated answers" in text


def test_intervention_and_origin_numbers(rendered: tuple[Path, str]) -> None:
    iv = _j(FIXTURE / "intervene" / "intervene.json")
    text = rendered[1]
    ivs = _section(text, "intervene")
    e = iv["benchmarks"]["faitheval"]["H"]["3.0"]
    # parse failures at α = 3: 6 of 80 = 7.5%, flagged because it exceeds 5%
    assert e["parse_failures"] == 6 and e["n"] == 80
    assert f"{100 * e['compliance']:.1f} [{100 * e['ci'][0]:.1f}, {100 * e['ci'][1]:.1f}]" in ivs
    assert "H parse failures at α = 2.5, 3.0 (up to 7.5%)" in ivs
    assert "random truncated at α = 0.0" in ivs  # jailbreak: 3 of 50 = 6% > 5%
    og = _section(text, "origin")
    assert "0.773" in og and "0.0021" in og and "0.0008" in og


def test_missing_origin_shows_not_run(run_dir: Path, stub_figures: None) -> None:
    shutil.rmtree(run_dir / "origin")
    text = render_report(run_dir)
    body = _section(text, "origin")
    assert "not run: origin/origin.json is missing" in body
    assert "<img" not in body
    origin_claim = claims(run_dir)[3]
    assert origin_claim.verdict == "not tested"


def test_origin_not_run_reason_from_file_and_manifest(run_dir: Path, stub_figures: None) -> None:
    (run_dir / "origin" / "origin.json").write_text(json.dumps({"status": "not run", "reason": "no base_model set"}))
    assert "not run: no base_model set" in _section(render_report(run_dir), "origin")
    RunDir(run_dir).mark_skipped("intervene", "--stages excluded it")
    text = render_report(run_dir)
    assert "not run: --stages excluded it" in _section(text, "intervene")
    assert "<img" not in _section(text, "intervene")


def test_malformed_files_do_not_crash(run_dir: Path, stub_figures: None) -> None:
    (run_dir / "detect" / "detect.json").write_text("{broken")
    (run_dir / "intervene" / "intervene.json").write_text(json.dumps({"benchmarks": {"falseqa": {"H": 3}}}))
    text = render_report(run_dir)
    assert "not valid JSON" in _section(text, "detect")
    assert "intervene files are malformed" in _section(text, "intervene")
    assert "<img" in _section(text, "probe")  # the rest still renders


def test_claims_on_fixture(run_dir: Path) -> None:
    ex, det, imp, org = claims(run_dir)
    assert ex.verdict == "held"  # 0.304‰ < 1‰, n_positive 14 > 0
    assert "only 160 questions per class" in ex.text  # honest about the small training set
    assert det.verdict == "held"  # every h_neurons AUROC CI lower bound > the random mean (fixture)
    # Slopes are positive on 3 of 4 benchmarks but α = 0 and α = 3 CIs overlap everywhere (n ≤ 80)
    assert imp.verdict == "inconclusive"
    assert "sycophancy: compliance does not rise" in imp.text
    assert org.verdict == "partly held"  # bioasq transfer CI [0.47, 0.63] includes 0.5


def test_claim_rules_respond_to_data(run_dir: Path) -> None:
    ivp = run_dir / "intervene" / "intervene.json"
    iv = _j(ivp)
    for b in iv["benchmarks"].values():
        b["slope"] = {"H": 0.1, "random": 0.0, "H_ci": [0.05, 0.15]}
    ivp.write_text(json.dumps(iv))
    assert claims(run_dir)[2].verdict == "held"
    for b in iv["benchmarks"].values():
        b["slope"] = {"H": -0.1, "random": 0.0}
    ivp.write_text(json.dumps(iv))
    assert claims(run_dir)[2].verdict == "did not hold"

    hp = run_dir / "probe" / "h_neurons.json"
    h = _j(hp)
    h["ratio_per_mille"] = 1.5
    hp.write_text(json.dumps(h))
    assert claims(run_dir)[0].verdict == "did not hold"

    dp = run_dir / "detect" / "detect.json"
    d = _j(dp)
    d["sets"]["bioasq"]["methods"]["random"]["auroc"] = 0.9  # above the H-Neuron AUROC 0.687
    dp.write_text(json.dumps(d))
    assert claims(run_dir)[1].verdict == "partly held"


def test_write_report_errors(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="does not exist"):
        write_report(tmp_path / "nope")
    with pytest.raises(StageError, match="no manifest.json"):
        write_report(tmp_path)


def test_report_stage_skips_until_inputs_change(run_dir: Path, stub_figures: None) -> None:
    ctx = Context(Config(), RunDir(run_dir), log=lambda s: None)
    fp0 = fingerprint_of(report_stage.inputs(ctx))
    summary = run_stage(ctx, "report")
    assert summary == {"path": str(run_dir / "report.html")}
    assert (run_dir / "report.html").is_file()
    # marking the report done changed the manifest, but not the report's own inputs
    assert fingerprint_of(report_stage.inputs(ctx)) == fp0
    assert run_stage(ctx, "report") == {"status": "skipped"}
    det = _j(run_dir / "detect" / "detect.json")
    det["sets"]["triviaqa"]["methods"]["h_neurons"]["auroc"] = 0.9
    (run_dir / "detect" / "detect.json").write_text(json.dumps(det))
    RunDir(run_dir).mark_done("detect", "fp-detect-rerun", 1.0)  # as a re-run of detect would
    assert fingerprint_of(report_stage.inputs(ctx)) != fp0
    assert run_stage(ctx, "report") == {"path": str(run_dir / "report.html")}
    assert "0.900 [" in (run_dir / "report.html").read_text()


def test_fresh_run_shows_every_stage_as_not_run(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"model": {"name": "tiny"}, "stages": {}}))
    text = render_report(tmp_path)
    assert "<img" not in text
    for sid in SECTIONS[2:]:
        assert "not run:" in _section(text, sid), sid
    assert "not run: responses/stats.json is missing" in text
    assert [c.verdict for c in claims(tmp_path)] == ["not tested"] * 4


def test_base_model_prompt_format_and_no_answers_are_reported(run_dir: Path, stub_figures: None) -> None:
    rd = RunDir(run_dir)
    rd.update_manifest(prompt_format={"configured": "chat", "used": "plain",
                                      "reason": "/m/base.gguf has no chat template (a base model)"})
    stats = _j(run_dir / "responses" / "stats.json")
    (run_dir / "responses" / "stats.json").write_text(json.dumps({**stats, "no_answer_questions": 13}))
    det = _j(run_dir / "detect" / "detect.json")
    first = next(iter(det["sets"]))
    det["sets"][first]["counts"] = {"refusals": 2, "no_answer": 7}
    (run_dir / "detect" / "detect.json").write_text(json.dumps(det))
    text = render_report(run_dir)
    assert re.search(r"prompt format</td>\s*<td[^>]*>plain \(/m/base\.gguf has no chat template", _section(text, "manifest"))
    assert re.search(r"empty answer \(no answer, dropped\)</td>\s*<td[^>]*>13<", _section(text, "responses"))
    assert re.search(r">2 / 7<", _section(text, "detect"))


def test_judges_section_shows_agreement_and_sources(run_dir: Path, stub_figures: None) -> None:
    from hneurons.judges.rules import judge_card

    ivp = run_dir / "intervene" / "intervene.json"
    iv = _j(ivp)
    iv["benchmarks"]["falseqa"]["judge_sources"] = {"llm:gpt": 7, "classifier (llm fallback)": 2}
    ivp.write_text(json.dumps(iv))
    text = write_report(run_dir).read_text()
    rows = {r[0]: r for r in _parse(_section(text, "judges")).tables[0][1:]}
    card = judge_card()
    tq, fq = card["triviaqa"], card["falseqa"]
    # every judge the fixture run used, with n and agreement % [95% Wilson CI] from the judge card
    assert set(rows) == {"TriviaQA correct / wrong (responses)", "QA correct / wrong (detect)",
                         "FalseQA accepted / refused (intervene)", "jailbreak harmful / safe (intervene)",
                         "FaithEval option parser (intervene)", "sycophancy correct / wrong (intervene)",
                         "qa: held-out QA correct / wrong (intervene)"}
    r = rows["TriviaQA correct / wrong (responses)"]
    assert r[2] == "573" and r[3] == f"{100 * tq['agreement']:.1f} [{100 * tq['ci95'][0]:.1f}, {100 * tq['ci95'][1]:.1f}]"
    assert rows["FalseQA accepted / refused (intervene)"][2].replace(",", "") == str(fq["n"]) == "1032"
    assert "grouped by goal" in rows["jailbreak harmful / safe (intervene)"][4]
    slopes = _parse(_section(text, "intervene")).tables[0]
    col = slopes[0].index("verdicts by judge")
    assert [r[col] for r in slopes[1:] if r[0] == "falseqa"] == ["classifier (llm fallback) 2, llm:gpt 7"]


def test_detection_is_confounded_when_a_trivial_baseline_matches(run_dir: Path) -> None:
    dp = run_dir / "detect" / "detect.json"
    d = _j(dp)
    assert claims(run_dir)[1].verdict == "held"
    first = next(iter(d["sets"]))
    d["sets"][first]["methods"]["span_shape"] = {"auroc": 0.99}  # the span rule alone separates the classes
    dp.write_text(json.dumps(d))
    det = claims(run_dir)[1]
    assert det.verdict == "confounded" and "Confounded by span_shape" in det.text
    assert f"{first}: confounded" in det.text
    d["span_method"] = "alias"
    dp.write_text(json.dumps(d))
    assert "label-aware parity rule" in claims(run_dir)[1].text


def test_span_quality_table_and_leak_warning(run_dir: Path, stub_figures: None) -> None:
    sp = run_dir / "responses" / "stats.json"
    s = _j(sp)
    s["spans"] = {"method": "alias", "label_blind": False, "alias_recall": 1.0, "alias_recall_n": 50,
                  "mean_tokens_faithful": 2.0, "mean_tokens_hallucinated": 22.5, "length_ratio": 11.25,
                  "gpt4o": None}
    sp.write_text(json.dumps(s))
    html = write_report(run_dir).read_text()
    assert "Answer spans" in html and "11.25" in html and "span length then predicts" in html.lower()


def test_detection_badge_names_held_inconclusive_and_untested_sets(run_dir: Path, stub_figures: None) -> None:
    """The fixture skipped nonexist (too few items): the badge must not claim every set."""
    det = claims(run_dir)[1]
    assert det.verdict == "held" and det.badge == "held on 3 of 4 sets"
    assert det.outcome == ("Held on: triviaqa, nq_open, bioasq. "
                           "Not tested: nonexist (only 4 hallucinated answers; need 10 per class).")
    summary = _section(render_report(run_dir), "summary")
    assert "held on 3 of 4 sets" in summary and "on every set" not in summary
    assert "Not tested: nonexist (only 4 hallucinated answers; need 10 per class)." in summary

    dp = run_dir / "detect" / "detect.json"
    d = _j(dp)
    d["sets"]["bioasq"]["methods"]["random"]["auroc"] = 0.6  # above the CI's lower end 0.532, below the AUROC 0.687
    d["sets"]["nq_open"]["methods"]["h_neurons"]["auroc"] = None  # no number: not tested either
    dp.write_text(json.dumps(d))
    det = claims(run_dir)[1]
    assert det.verdict == "partly held" and det.badge == "partly held on 2 of 4 sets"
    assert det.outcome == ("Held on: triviaqa. Inconclusive on: bioasq. "
                           "Not tested: nq_open (AUROC not available); nonexist (only 4 hallucinated answers; need 10 "
                           "per class).")
    d["skipped"] = {}
    d["sets"]["nq_open"]["methods"]["h_neurons"]["auroc"] = 0.72
    dp.write_text(json.dumps(d))
    det = claims(run_dir)[1]
    assert det.badge == "partly held" == det.verdict  # every set tested: no "on k of n"
    assert det.outcome == "Held on: triviaqa, nq_open. Inconclusive on: bioasq."


def test_text_from_the_run_is_escaped(run_dir: Path, stub_figures: None) -> None:
    m = _j(run_dir / "manifest.json")
    m["model"]["name"] = '<script>alert("x")</script>'
    (run_dir / "manifest.json").write_text(json.dumps(m))
    d = _j(run_dir / "detect" / "detect.json")
    d["skipped"] = {"<b>x</b>": "a & b <img src=x onerror=alert(1)>"}
    (run_dir / "detect" / "detect.json").write_text(json.dumps(d))
    text = render_report(run_dir)
    assert "<script>alert" not in text and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt; not run: a &amp; b &lt;img src=x" in text
    assert len(re.findall(r"<script>", text)) == 1  # the page's own image check


def test_neurons_are_labelled_one_way_and_names_win(run_dir: Path, stub_figures: None) -> None:
    hp = run_dir / "probe" / "h_neurons.json"
    h = _j(hp)
    h["neurons"][0]["name"] = "L20.shared.N964"
    h["neurons"][1]["expert"] = 5
    hp.write_text(json.dumps(h))
    table = [t for t in _parse(_section(render_report(run_dir), "probe")).tables if t[0][0] == "neuron"][0]
    assert table[0] == ["neuron", "weight", "selection freq."]
    n2 = h["neurons"][2]
    assert [r[0] for r in table[1:4]] == ["L20.shared.N964", f"L{h['neurons'][1]['layer']}.E5.N{h['neurons'][1]['neuron']}",
                                          f"L{n2['layer']}.N{n2['neuron']}"]


_FILES = {"responses/stats.json": "responses", "probe/h_neurons.json": "probe", "probe/path.json": "probe",
          "probe/stability.json": "probe", "detect/detect.json": "detect", "detect/risk_coverage.json": "risk",
          "intervene/intervene.json": "intervene", "origin/origin.json": "origin"}


@pytest.mark.parametrize("content", [b"{broken", b"[1, 2]", b'{"x": "\xff\xfe"}', b"[" * 100_000, b"{}",
                                     b'{"sets": 5, "benchmarks": [1], "neurons": 3, "transfer": "x", "methods": 2, '
                                     b'"correct_count_hist": {"a": 1}, "by_layer": [1], "points": 1, "frequency": 2}'])
def test_malformed_files_never_crash_the_report(run_dir: Path, stub_figures: None, content: bytes) -> None:
    for rel in _FILES:
        (run_dir / rel).write_bytes(content)
    text = render_report(run_dir)  # never raises
    assert len(re.findall(r'<section id="', text)) == len(SECTION_TABLE)
    if not content.startswith(b"{") or content == b"{broken":  # unreadable: every section that reads one says why
        for sid in set(_FILES.values()):
            assert "not run:" in _section(text, sid), sid
    assert "not run" not in _section(text, "manifest")


@pytest.mark.parametrize("rel", list(_FILES))
def test_a_malformed_file_only_affects_its_own_section(run_dir: Path, stub_figures: None, rel: str) -> None:
    (run_dir / rel).write_text("{broken")
    text = render_report(run_dir)
    assert "not valid JSON" in _section(text, _FILES[rel])
    for sid in set(_FILES.values()) - {_FILES[rel]}:
        assert "not run:" not in _section(text, sid).replace("nonexist not run", ""), (rel, sid)


def test_a_section_is_one_row_of_the_table(run_dir: Path, stub_figures: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from hneurons.report import sections

    def broken(run):
        raise KeyError("boom")

    def empty(run):
        raise sections.NotRun("nothing here yet")

    extra = (sections.Section("risk", "Broken", "Broken section", "detect", broken),
             sections.Section("judges", "Empty", "Empty section", "", empty))
    monkeypatch.setattr(sections, "SECTIONS", sections.SECTIONS[:2] + extra)
    from hneurons import report

    monkeypatch.setattr(report, "SECTIONS", sections.SECTIONS)
    text = render_report(run_dir)
    assert re.findall(r'<a href="#(\w+)">', text) == ["summary", "manifest", "risk", "judges"]
    assert "not run: the detect files are malformed (KeyError: &#39;boom&#39;); re-run the detect stage" in text
    assert "<h2>Empty section</h2>\n<p class=\"notrun\">not run: nothing here yet</p>" in text


def test_report_stage_fingerprints_the_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    """A changed template re-renders old runs: the report stage's code fingerprint covers them all."""
    from hneurons.report.html import env

    names = set(env().list_templates())
    assert {"page.html", "macros.html", "section.html", "report.html"} <= names
    assert {f"sections/{s.sid}.html" for s in SECTION_TABLE} <= names
    seen: list[str] = []
    monkeypatch.setattr(report_stage, "file_fingerprint", lambda p: seen.append(Path(p).as_posix()) or "x")
    report_stage._code_fingerprint()
    assert {f"templates/{n}" for n in names} <= {s.split("/hneurons/report/", 1)[1] for s in seen}


def test_formatters_take_anything_a_json_file_holds() -> None:
    from hneurons.report import fmt

    assert fmt.sig(79.72226578054777) == "79.72" and fmt.sig(0.05) == "0.05" and fmt.sig(None) == "—"
    assert fmt.num(float("nan")) == fmt.num(True) == fmt.num("0.5") == fmt.count(None) == "—"
    assert fmt.pct(0.1234) == "12.3" and fmt.pct_ci([0.1, 0.2]) == "[10.0, 20.0]"
    assert fmt.ci([None, None]) == fmt.ci("ab") == fmt.ci([1, 2, 3]) == ""
    assert fmt.seconds(90) == "90.0 s" and fmt.seconds(600) == "10.0 min" and fmt.seconds(9000) == "2.50 h"
    assert fmt.neuron({"layer": 3, "neuron": 17}) == "L3.N17" and fmt.neuron({"layer": 3, "neuron": 2, "expert": 5}) \
        == "L3.E5.N2" and fmt.neuron({"layer": 3, "neuron": 2, "name": "L3.shared.N2"}) == "L3.shared.N2"


def test_auroc_axis_reaches_every_bar() -> None:
    """A bar under the axis would vanish (NonExist's residual probe read 0.286 at 53ca601)."""
    from hneurons.report.figures import auroc_axis_floor

    assert auroc_axis_floor([0.755, 0.6, 0.5]) == 0.3
    assert auroc_axis_floor([0.8, 0.286, float("nan")]) == 0.2
    assert auroc_axis_floor([0.41 - 0.15, 0.9]) == 0.2
    assert auroc_axis_floor([0.04]) == 0.0 and auroc_axis_floor([]) == 0.3


@pytest.mark.parametrize("budget, shown", [
    ({"minutes": 25, "rate": 3.2, "scale": 0.29, "sizes": {"responses.n_questions": {"configured": 4500, "used": 1322}}},
     "25 min; timing 3.2 questions/s; sizes scaled by 0.29: responses.n_questions 4500 → 1322"),
    ({"minutes": 25, "rate": 15.1, "scale": 1.0, "sizes": {}}, "the configured sizes fit"),
    ({"minutes": 25, "sizes": {"x": 3, "<b>": {"used": "<i>"}}}, "&lt;b&gt; None → &lt;i&gt;"),
    ("not a record", None),
])
def test_the_time_budget_is_reported(run_dir: Path, stub_figures: None, budget: object, shown: str | None) -> None:
    RunDir(run_dir).update_manifest(budget=budget)
    manifest = _section(render_report(run_dir), "manifest")
    if shown is None:
        assert "time budget" not in manifest
    else:
        assert re.search(r"time budget</td>\s*<td[^>]*>25 min; ", manifest) and shown in manifest
