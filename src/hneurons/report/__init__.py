"""The HTML report: one self-contained file built only from a run directory's files.

The report reads the JSON files every stage writes (docs/RUNDIR.md) and nothing else, so it can be
rebuilt from a copied run folder on a machine without the model. A stage that did not run, or whose
files are missing or malformed, is shown as a "not run: reason" box rather than an empty figure,
and the page carries a Content-Security-Policy that forbids every network load: it opens offline
and cannot leak that it was opened.

Public API: :func:`render_report` (HTML text) and :func:`write_report` (atomic write to
``<run>/report.html``). :data:`REPORT_FILES` lists the files read, for the report stage's input
fingerprint.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from hneurons.detection.methods import TRIVIAL_BASELINES
from hneurons.errors import StageError
from hneurons.report import figures
from hneurons.rundir import atomic_path, read_json

__all__ = ["REPORT_FILES", "Claim", "claims", "render_report", "write_report"]

# Files the report reads, per stage (besides each stage's _done.json and the manifest).
REPORT_FILES: dict[str, tuple[str, ...]] = {
    "responses": ("stats.json",),
    "features": (),
    "probe": ("h_neurons.json", "path.json", "stability.json"),
    "detect": ("detect.json", "risk_coverage.json"),
    "intervene": ("intervene.json",),
    "origin": ("origin.json",),
}

# Below these sizes the report says that the numbers are indicative only.
SMALL_TRAIN_PER_CLASS = 200
SMALL_EVAL_N = 200
SMALL_BENCH_N = 100
SMALL_H = 10
RATE_WARN = 0.05

_MALFORMED = (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError)


# ----------------------------------------------------------------------------------------------
# formatting


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _isnum(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _f(x: Any, nd: int = 3) -> str:
    """A number with ``nd`` decimals, or an em dash for null/missing."""
    return f"{x:.{nd}f}" if _isnum(x) else "—"


def _pct(x: Any, nd: int = 1) -> str:
    """A fraction in [0, 1] as a percentage without the sign (tables say % in the header)."""
    return f"{100 * x:.{nd}f}" if _isnum(x) else "—"


def _ci(ci: Any, fmt: Callable[[Any], str] = _f) -> str:
    if isinstance(ci, Sequence) and not isinstance(ci, str) and len(ci) == 2 and any(_isnum(v) for v in ci):
        return f"[{fmt(ci[0])}, {fmt(ci[1])}]"
    return ""


def _int(x: Any) -> str:
    return f"{int(x):,}" if _isnum(x) else "—"


def _seconds(x: Any) -> str:
    if not _isnum(x):
        return "—"
    if x < 120:
        return f"{x:.1f} s"
    if x < 7200:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.2f} h"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], num_cols: set[int] | None = None,
           row_classes: Sequence[str] | None = None) -> str:
    """An HTML table; cells are already-escaped HTML, numeric columns are right-aligned."""
    num_cols = num_cols or set()
    head = "".join(f'<th{" class=num" if i in num_cols else ""}>{h}</th>' for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cls = row_classes[r] if row_classes and row_classes[r] else ""
        cells = "".join(f'<td{" class=num" if i in num_cols else ""}>{c}</td>' for i, c in enumerate(row))
        body.append(f'<tr{f" class={cls}" if cls else ""}>{cells}</tr>')
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _img(uri: str, alt: str) -> str:
    return f'<img class="fig" src="{uri}" alt="{_esc(alt)}">'


def _notrun(reason: str) -> str:
    return f'<p class="notrun">not run: {_esc(reason)}</p>'


def _p(text: str, cls: str = "") -> str:
    return f'<p{f" class={cls}" if cls else ""}>{text}</p>'


# ----------------------------------------------------------------------------------------------
# reading the run directory


@dataclass
class _Run:
    """A run directory's files, loaded leniently: a missing file becomes a reason, not an error."""

    root: Path
    manifest: dict[str, Any]

    def stage_reason(self, stage: str) -> str | None:
        """Why a stage did not run, if the manifest or its _done.json says so."""
        entry = (self.manifest.get("stages") or {}).get(stage) or {}
        if entry.get("status") == "not run":
            return str(entry.get("reason") or "no reason recorded")
        done = self.root / stage / "_done.json"
        if done.is_file():
            try:
                skipped = json.loads(done.read_text()).get("skipped")
            except (json.JSONDecodeError, AttributeError):
                skipped = None
            if skipped:
                return str(skipped)
        return None

    def load(self, stage: str, name: str) -> tuple[dict[str, Any] | None, str | None]:
        """``(data, None)`` or ``(None, reason)`` for ``<stage>/<name>``."""
        reason = self.stage_reason(stage)
        if reason:
            return None, reason
        path = self.root / stage / name
        if not path.is_file():
            return None, f"{stage}/{name} is missing; run `hneurons {stage} {self.root}` to produce it"
        try:
            data = read_json(path)
        except StageError as exc:
            return None, str(exc)
        if not isinstance(data, dict):
            return None, f"{stage}/{name} is not a JSON object; delete it and re-run the {stage} stage"
        return data, None


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{_esc(title)}</h2>\n{body}\n</section>'


def _guard(stage: str, build: Callable[[], str]) -> str:
    """Render one section; a malformed file shows as a reason instead of crashing the whole report."""
    try:
        return build()
    except _MALFORMED as exc:
        return _notrun(f"the {stage} files are malformed ({type(exc).__name__}: {exc}); re-run the {stage} stage "
                       f"with --force")


# ----------------------------------------------------------------------------------------------
# claims


@dataclass
class Claim:
    """One of the paper's claims and how it fared on this run."""

    name: str
    verdict: str  # held | partly held | inconclusive | confounded | did not hold | not tested
    text: str  # plain-language explanation (HTML-escaped already)


_VERDICT_CLASS = {"held": "v-held", "partly held": "v-inconclusive", "inconclusive": "v-inconclusive",
                  "confounded": "v-notheld",
                  "did not hold": "v-notheld", "not tested": "v-nottested"}


def _combine(passes: Sequence[bool | None]) -> str:
    """All strong passes → held; no pass at all → did not hold; a mix → partly held / inconclusive."""
    if not passes:
        return "not tested"
    if all(p is True for p in passes):
        return "held"
    if all(p is False for p in passes):
        return "did not hold"
    if any(p is True for p in passes):
        return "partly held"
    return "inconclusive"


def _existence(probe: dict | None, probe_reason: str | None, stats: dict | None,
               stability: dict | None, path: dict | None) -> Claim:
    name = "Existence: a very sparse set of neurons (< 1‰) predicts hallucination"
    if probe is None:
        return Claim(name, "not tested", _esc(f"no probe: {probe_reason}"))
    n_pos, ratio, total = probe.get("n_positive"), probe.get("ratio_per_mille"), probe.get("n_neurons_total")
    parts = [f"The probe (C = {probe.get('C')}) selected {_int(n_pos)} H-Neurons out of {_int(total)} neurons "
             f"= {_f(ratio, 3)}‰ (paper: 0.01–0.35‰)."]
    if not _isnum(n_pos) or n_pos <= 0:
        verdict = "did not hold"
        parts.append("No neuron got a positive weight, so no H-Neurons exist at this C.")
    elif _isnum(ratio) and ratio < 1.0:
        verdict = "held"
    else:
        verdict = "did not hold"
        parts.append("The selected set is not sparser than 1‰.")
    if path:
        sel = next((p for p in path.get("points", []) if p.get("C") == path.get("selected_C")), None)
        if sel and _isnum(sel.get("heldout_acc")):
            parts.append(f"Held-out accuracy at the chosen C: {_pct(sel['heldout_acc'])}% (0.5 = chance).")
            if sel["heldout_acc"] <= 0.5 and verdict == "held":
                verdict = "inconclusive"
                parts.append("The neurons do not predict held-out labels better than chance.")
    if stats:
        per_class = min((stats.get("train") or {}).get(k, 0) or 0 for k in ("faithful", "hallucinated"))
        if per_class < SMALL_TRAIN_PER_CLASS:
            parts.append(f"Caution: trained on only {per_class} questions per class (paper: 1,000); with so few, "
                         "which neurons are selected varies from sample to sample.")
    if stability and _isnum(stability.get("jaccard_mean")):
        parts.append(f"Stability across {stability.get('n_resamples')} resamples: Jaccard "
                     f"{_f(stability['jaccard_mean'], 2)} ± {_f(stability.get('jaccard_std'), 2)}.")
    return Claim(name, verdict, _esc(" ".join(parts)))


def _detection(detect: dict | None, reason: str | None) -> Claim:
    """Held only where the H-Neuron AUROC's CI clears the random-neuron mean *and* every trivial
    baseline (length, span shape); clearing random but not a trivial baseline is "confounded"."""
    name = "Detection: H-Neurons detect hallucinations better than random neurons, on every set"
    if detect is None:
        return Claim(name, "not tested", _esc(f"no detection results: {reason}"))
    passes, parts, confounders = [], [], set()
    if detect.get("span_method") == "alias":
        parts.append("Warning: answer spans came from the label-aware parity rule (spans.method = alias): a correct "
                     "answer is averaged over its alias and a wrong one over the whole response, so span length "
                     "leaks the label and these numbers overstate detection.")
    for s, d in (detect.get("sets") or {}).items():
        m = d.get("methods") or {}
        h, r = m.get("h_neurons") or {}, m.get("random") or {}
        auc, ci, rnd = h.get("auroc"), h.get("auroc_ci") or [None, None], r.get("auroc")
        if not (_isnum(auc) and _isnum(rnd)):
            parts.append(f"{s}: AUROC not available.")
            continue
        trivial = {b: (m.get(b) or {}).get("auroc") for b in TRIVIAL_BASELINES}
        trivial = {b: v for b, v in trivial.items() if _isnum(v)}
        beaten_by = [b for b, v in trivial.items() if not (_isnum(ci[0]) and ci[0] > v)]
        note = ""
        if _isnum(ci[0]) and ci[0] > rnd and not beaten_by:
            passes.append(True)
            word = "above"
        elif _isnum(ci[0]) and ci[0] > rnd:
            passes.append(None)
            confounders.update(beaten_by)
            word = "above"
        elif auc > rnd:
            passes.append(None)
            word = "above"
            note = ", but its CI reaches that mean"
        else:
            passes.append(False)
            word = "not above"
        if _isnum(d.get("n")) and d["n"] < SMALL_EVAL_N:
            note += f" (n = {d.get('n')}: small, CI is wide)"
        parts.append(f"{s}: H-Neuron AUROC {_f(auc)} {_ci(ci)} is {word} random neurons ({_f(rnd)}){note}.")
        if beaten_by:
            parts.append(f"{s}: confounded — " + ", ".join(f"{b} alone reaches AUROC {_f(trivial[b])}" for b in beaten_by)
                         + ", which the H-Neuron CI does not clear.")
    for s, why in (detect.get("skipped") or {}).items():
        parts.append(f"{s}: not tested ({why}).")
    verdict = _combine(passes)
    if confounders and verdict != "did not hold":
        verdict = "confounded"
        parts.insert(0, "Confounded by " + ", ".join(sorted(confounders)) + ".")
    return Claim(name, verdict, _esc(" ".join(parts)))


def _slope_ci_lo(slope: Mapping[str, Any]) -> float | None:
    ci = slope.get("H_ci")
    return ci[0] if isinstance(ci, Sequence) and len(ci) == 2 and _isnum(ci[0]) else None


def _impact(iv: dict | None, reason: str | None) -> Claim:
    name = "Impact: amplifying H-Neurons (α > 1) raises over-compliance, more than random neurons"
    if iv is None:
        return Claim(name, "not tested", _esc(f"no intervention results: {reason}"))
    passes, parts = [], []
    for b, d in (iv.get("benchmarks") or {}).items():
        slope = d.get("slope") or {}
        sh, sr = slope.get("H"), slope.get("random")
        if not _isnum(sh):
            parts.append(f"{b}: no slope.")
            continue
        ok = sh > 0 and (not _isnum(sr) or sh > sr)
        lo = _slope_ci_lo(slope)
        # The change must exceed the noise: a slope CI above 0, or end points whose CIs do not overlap.
        if ok and lo is not None and lo <= 0:
            ok = None
        elif ok and lo is None and d.get("H"):
            keys = sorted(d["H"], key=float)
            first, last = d["H"][keys[0]].get("ci") or [None, None], d["H"][keys[-1]].get("ci") or [None, None]
            if _isnum(first[1]) and _isnum(last[0]) and last[0] <= first[1]:
                ok = None
        passes.append(ok)
        word = {True: "rises", None: "rises, but within the noise", False: "does not rise more than the control"}[ok]
        small = f"; n = {d.get('n')} items is small" if _isnum(d.get("n")) and d["n"] < SMALL_BENCH_N else ""
        parts.append(f"{b}: compliance {word} (slope {_pct(sh)} pp per unit α vs random {_pct(sr)}{small}).")
    return Claim(name, _combine(passes), _esc(" ".join(parts)))


def _origin(origin: dict | None, reason: str | None) -> Claim:
    name = "Origin: H-Neurons already exist in the base model and change little in instruction tuning"
    if origin is None:
        return Claim(name, "not tested", _esc(f"origin analysis not run: {reason}"))
    passes, parts = [], []
    for s, t in (origin.get("transfer") or {}).items():
        auc, ci = t.get("auroc"), t.get("auroc_ci") or [None, None]
        if not _isnum(auc):
            continue
        ok = True if (auc > 0.5 and _isnum(ci[0]) and ci[0] > 0.5) else (None if auc > 0.5 else False)
        passes.append(ok)
        parts.append(f"{s}: the instruct probe on the base model reaches AUROC {_f(auc)} {_ci(ci)}"
                     f"{'' if ok else ' (CI includes 0.5)' if ok is None else ' (not above chance)'}.")
    dr = origin.get("drift") or {}
    mr = dr.get("mean_rank_h")
    p = dr.get("t_p") if _isnum(dr.get("t_p")) else dr.get("perm_p")
    if _isnum(mr):
        ok = True if (mr > 0.5 and _isnum(p) and p < 0.05) else (None if mr > 0.5 else False)
        passes.append(ok)
        n_h = dr.get("n_h")
        perm = f", permutation p = {_f(dr['perm_p'], 4)}" if _isnum(dr.get("perm_p")) else ""
        parts.append(f"Parameter drift: mean normalised rank of the {n_h} H-Neurons is {_f(mr)} (0.5 = like random; "
                     f"higher = changed less), one-sided p = {_f(p, 4)}{perm}.")
        if _isnum(n_h) and n_h < SMALL_H:
            parts.append(f"With only {n_h} H-Neurons this test has little power.")
    return Claim(name, _combine(passes), _esc(" ".join(parts)))


def claims(run_dir: str | Path) -> list[Claim]:
    """How each of the paper's four claims fared in a run (also the report's summary section)."""
    run = _open(Path(run_dir))
    return _claims(run)


def _claims(run: _Run) -> list[Claim]:
    probe, probe_reason = run.load("probe", "h_neurons.json")
    stats, _ = run.load("responses", "stats.json")
    stability, _ = run.load("probe", "stability.json")
    path, _ = run.load("probe", "path.json")
    detect, d_reason = run.load("detect", "detect.json")
    iv, i_reason = run.load("intervene", "intervene.json")
    origin, o_reason = _load_origin(run)
    out = []
    for build in (lambda: _existence(probe, probe_reason, stats, stability, path),
                  lambda: _detection(detect, d_reason), lambda: _impact(iv, i_reason),
                  lambda: _origin(origin, o_reason)):
        try:
            out.append(build())
        except _MALFORMED as exc:
            out.append(Claim("(claim could not be evaluated)", "not tested",
                             _esc(f"a result file is malformed ({type(exc).__name__}: {exc})")))
    return out


def _load_origin(run: _Run) -> tuple[dict | None, str | None]:
    origin, reason = run.load("origin", "origin.json")
    if origin is not None and origin.get("status") == "not run":
        return None, str(origin.get("reason") or "no reason recorded")
    return origin, reason


# ----------------------------------------------------------------------------------------------
# sections


def _summary_section(run: _Run) -> str:
    items = []
    for c in _claims(run):
        cls = _VERDICT_CLASS.get(c.verdict, "v-nottested")
        items.append(f'<li><span class="verdict {cls}">{_esc(c.verdict)}</span> <b>{_esc(c.name)}</b><br>'
                     f'<span class="note">{c.text}</span></li>')
    intro = _p("Each claim of the paper is checked against this run with a fixed rule: existence = fewer than 1‰ of "
               "neurons selected; detection = the H-Neuron AUROC's 95% CI lies above the random-neuron mean and above "
               "every trivial baseline (length, span_shape) on each set, else <i>confounded</i>; impact = the compliance slope over α is positive and above the random control on each benchmark; "
               "origin = transfer AUROC above 0.5 and H-Neuron drift rank above 0.5 with p &lt; 0.05. "
               "<i>Held</i> needs the whole interval to clear the bar; a point estimate that clears it while its "
               "interval does not is <i>inconclusive</i>.", "note")
    return _section("summary", "Which of the paper's claims held on this model",
                    intro + f'<ul class="claims">{"".join(items)}</ul>')


def _manifest_section(run: _Run) -> str:
    m = run.manifest
    model = m.get("model") or {}
    rows = [[_esc(k), _esc(model.get(k, "—"))] for k in
            ("name", "source", "fingerprint", "model_type", "n_layers", "d_ff", "n_neurons", "dtype", "device")]
    pf = m.get("prompt_format") or {}
    if pf:
        note = f" ({pf['reason']}; the config asked for {pf.get('configured')})" if pf.get("reason") else ""
        rows.append(["prompt format", _esc(f"{pf.get('used')}{note}")])
    rows += [["seed", _esc(m.get("seed", "—"))], ["git commit", f"<code>{_esc(m.get('git_commit') or '—')}</code>"],
             ["created", _esc(m.get("created", "—"))]]
    body = "<h3>Model and run</h3>" + _table(["field", "value"], rows)
    stages = m.get("stages") or {}
    srows = []
    for s in REPORT_FILES:
        e = stages.get(s) or {}
        reason = run.stage_reason(s)
        has_done = (run.root / s / "_done.json").is_file()
        status = "not run" if reason else e.get("status") or ("done" if has_done else "not run")
        secs = e.get("seconds")
        if secs is None and has_done:
            try:
                secs = json.loads((run.root / s / "_done.json").read_text()).get("seconds")
            except (json.JSONDecodeError, AttributeError):
                secs = None
        note = reason or ("" if status == "done" else "no output yet")
        srows.append([_esc(s), _esc(status), _seconds(secs) if status == "done" else "—", _esc(note)])
    body += "<h3>Stages</h3>" + _table(["stage", "status", "time", "note"], srows, {2})
    versions = m.get("versions") or {}
    if versions:
        body += "<h3>Versions</h3>" + _table(["package", "version"], [[_esc(k), _esc(v)] for k, v in versions.items()])
    return _section("manifest", "Run manifest", body)


def _span_quality(sp: Any) -> str:
    """The answer-span locator: which rule, how it did, and a warning when it leaks the label."""
    if not isinstance(sp, dict):
        return ""
    g = sp.get("gpt4o") or {}
    ratio = sp.get("length_ratio")
    rows = [["method", _esc(sp.get("method"))],
            ["alias recall (faithful spans containing the matched alias; goal ≥ 90%)",
             f"{_pct(sp.get('alias_recall'))}% (n = {_int(sp.get('alias_recall_n'))})"],
            ["mean span tokens faithful / hallucinated",
             f"{_f(sp.get('mean_tokens_faithful'), 2)} / {_f(sp.get('mean_tokens_hallucinated'), 2)}"],
            ["length ratio hallucinated / faithful (goal 0.67–1.5)", _f(ratio, 2)],
            ["agreement with GPT-4o answer tokens (573 dev responses): exact / token F1",
             f"{_pct(g.get('exact'))}% / {_f(g.get('token_f1'), 3)}" if g else "not measured for this method"]]
    body = "<h3>Answer spans</h3>" + _table(["", "value"], rows, {1})
    if not sp.get("label_blind", True):
        body += _p("<b>Warning:</b> spans.method = alias reads the judge's matched alias, so a correct answer is "
                   "averaged over its alias and a wrong one over the whole response. Span length then predicts the "
                   "label by itself; use it only for parity experiments with the official code.")
    elif _isnum(ratio) and not 0.67 <= ratio <= 1.5:
        body += _p(f"Caution: hallucinated spans are {_f(ratio, 2)}× as long as faithful ones; see the span_shape "
                   "baseline in Detection before trusting detection numbers.")
    return body


def _responses_section(run: _Run) -> str:
    stats, reason = run.load("responses", "stats.json")
    if stats is None:
        return _section("responses", "Responses", _notrun(reason or ""))

    def build() -> str:
        k = stats.get("k")
        hist = stats.get("correct_count_hist") or []
        kept, train, held = stats.get("kept") or {}, stats.get("train") or {}, stats.get("heldout") or {}
        rows = [["questions sampled", _int(stats.get("questions_sampled"))],
                ["samples per question (K)", _int(k)], ["temperature", _f(stats.get("temperature"), 2)],
                ["kept faithful (all K correct)", _int(kept.get("faithful"))],
                ["kept hallucinated (all K wrong)", _int(kept.get("hallucinated"))],
                ["mixed (dropped)", _int(stats.get("mixed"))],
                ["questions with refusals (dropped)", _int(stats.get("refusal_questions"))],
                ["questions with an empty answer (no answer, dropped)", _int(stats.get("no_answer_questions"))],
                ["unlocated answer spans (dropped)", _int(stats.get("unlocated_spans"))],
                ["train faithful / hallucinated", f"{_int(train.get('faithful'))} / {_int(train.get('hallucinated'))}"],
                ["held-out faithful / hallucinated", f"{_int(held.get('faithful'))} / {_int(held.get('hallucinated'))}"],
                ["generation time", _seconds(stats.get("seconds"))],
                ["tokens generated", _int(stats.get("tokens"))], ["tokens / s", _f(stats.get("tok_s"), 1)]]
        screen = stats.get("screen")
        if isinstance(screen, dict):
            rows.append(["greedy screen: questions / correct / candidates",
                         f"{_int(screen.get('questions'))} / {_int(screen.get('greedy_correct'))} / "
                         f"{_int(screen.get('candidates'))}"])
        body = _table(["", "value"], rows, {1})
        if hist:
            body += _img(figures.correct_count_histogram(hist, int(k) if _isnum(k) else len(hist) - 1),
                         "histogram of correct samples per question")
        body += _span_quality(stats.get("spans"))
        return body

    return _section("responses", "Responses", _guard("responses", build))


def _probe_section(run: _Run) -> str:
    h, reason = run.load("probe", "h_neurons.json")
    if h is None:
        return _section("probe", "H-Neurons (probe)", _notrun(reason or ""))
    path, path_reason = run.load("probe", "path.json")
    stab, stab_reason = run.load("probe", "stability.json")

    def build() -> str:
        body = _table(["", "value"], [
            ["chosen C", _esc(h.get("C"))], ["mode", _esc(h.get("mode", "—"))],
            ["H-Neurons (positive weight)", _int(h.get("n_positive"))],
            ["non-zero weights", _int(h.get("n_nonzero"))], ["neurons in the model", _int(h.get("n_neurons_total"))],
            ["ratio (‰)", _f(h.get("ratio_per_mille"), 3)]], {1})
        body += "<h3>Regularisation path</h3>"
        if path and path.get("points"):
            body += _img(figures.C_path(path["points"], path.get("selected_C")), "probe C path")
            body += _p(f"Rule for C: {_esc(path.get('rule', '—'))}. Accuracy at α = 1 on the suppression questions: "
                       f"{_pct(path.get('baseline_suppression_acc'))}%.", "note")
            prow = [[_esc(p.get("C")), _int(p.get("n_nonzero")), _int(p.get("n_positive")), _pct(p.get("train_acc")),
                     _pct(p.get("heldout_acc")), _f(p.get("heldout_auroc")), _pct(p.get("suppression_acc")),
                     _f(p.get("score"))] for p in sorted(path["points"], key=lambda p: p.get("C") or 0)]
            classes = ["hrow" if p.get("C") == path.get("selected_C") else "" for p in
                       sorted(path["points"], key=lambda p: p.get("C") or 0)]
            body += _table(["C", "non-zero", "positive", "train acc %", "held-out acc %", "held-out AUROC",
                            "suppression acc %", "score"], prow, set(range(8)), classes)
        else:
            body += _notrun(path_reason or "path.json has no points")
        body += "<h3>Layer distribution</h3>"
        if h.get("by_layer"):
            body += _img(figures.layer_distribution(h["by_layer"]), "H-Neurons per layer")
        else:
            body += _notrun("h_neurons.json has no by_layer counts")
        neurons = h.get("neurons") or []
        freq = {(int(r["layer"]), int(r["neuron"])): r.get("freq") for r in (stab or {}).get("frequency", [])}
        body += "<h3>Stability</h3>"
        if stab:
            body += _p(f"Over {_esc(stab.get('n_resamples'))} resamples at C = {_esc(stab.get('C'))}: mean Jaccard "
                       f"overlap {_f(stab.get('jaccard_mean'))} ± {_f(stab.get('jaccard_std'))} "
                       "(1 = the same neurons every time).")
            if stab.get("frequency"):
                hset = {(int(n["layer"]), int(n["neuron"])) for n in neurons}
                body += _img(figures.selection_frequency(stab["frequency"], hset), "selection frequency")
        else:
            body += _notrun(stab_reason or "")
        if neurons:
            top = neurons[:30]
            body += f"<h3>H-Neurons (top {len(top)} of {len(neurons)} by weight)</h3>"
            body += _table(["layer", "neuron", "weight", "selection freq."],
                           [[_int(n.get("layer")), _int(n.get("neuron")), _f(n.get("weight"), 4),
                             _f(freq.get((int(n["layer"]), int(n["neuron"]))), 2)] for n in top], {0, 1, 2, 3})
        return body

    return _section("probe", "H-Neurons (probe)", _guard("probe", build))


def _detect_section(run: _Run) -> str:
    det, reason = run.load("detect", "detect.json")
    if det is None:
        return _section("detect", "Detection", _notrun(reason or ""))

    def build() -> str:
        sets = det.get("sets") or {}
        methods = list(det.get("methods") or sorted({m for d in sets.values() for m in d.get("methods", {})}))
        body = ""
        if sets:
            body += _table(["set", "n", "faithful / hallucinated", "dropped: refusals / no answer", "note"],
                           [[_esc(s), _int(d.get("n")), f"{_int((d.get('n_per_class') or {}).get('0'))} / "
                             f"{_int((d.get('n_per_class') or {}).get('1'))}",
                             f"{_int((d.get('counts') or {}).get('refusals'))} / "
                             f"{_int((d.get('counts') or {}).get('no_answer'))}", _esc(d.get("note") or "")]
                            for s, d in sets.items()], {1, 2, 3})
            for metric, title, fmt in (("auroc", "AUROC", _f), ("accuracy", "Accuracy (%)", _pct)):
                rows, classes = [], []
                for m in methods:
                    row = [_esc(m)]
                    for s in sets:
                        e = (sets[s].get("methods") or {}).get(m) or {}
                        sd = e.get(f"{metric}_sd")
                        extra = f" <span class=note>sd {fmt(sd)}, {e.get('draws')} draws</span>" if _isnum(sd) else ""
                        row.append(f"{fmt(e.get(metric))} {_ci(e.get(f'{metric}_ci'), fmt)}{extra}")
                    rows.append(row)
                    classes.append("confound" if m in TRIVIAL_BASELINES else "hrow" if m == "h_neurons" else "")
                body += f"<h3>{title} with 95% CI</h3>"
                body += _table(["method", *(_esc(s) for s in sets)], rows, set(range(1, len(sets) + 1)), classes)
                body += _img(figures.detection_bars(sets, methods, metric), f"detection {metric} per set and method")
            body += _p("The highlighted <b>length</b> and <b>span_shape</b> rows are leak guards: scores that know only "
                       "the response's length or the answer span's size and position. Detection counts as held only "
                       "where the H-Neuron CI clears them too; if they come close, the signal may be length or the "
                       "span rule. "
                       "<b>random</b> is the mean over random neuron sets of the same size (sd across draws shown).",
                       "note")
        else:
            body += _notrun("detect.json lists no evaluated sets")
        for s, why in (det.get("skipped") or {}).items():
            body += f"<p class=notrun>{_esc(s)} not run: {_esc(why)}</p>"
        for m, why in (det.get("methods_not_fitted") or {}).items():
            body += f"<p class=notrun>method {_esc(m)} not run: {_esc(why)}</p>"
        info = det.get("method_info") or {}
        if info:
            body += "<h3>Methods</h3>" + _table(["method", "what it scores"], [
                [_esc(m), _esc((info.get(m) or {}).get("description", ""))] for m in methods if m in info])
        if det.get("accuracy_rule"):
            body += _p("Accuracy rule: " + _esc(det["accuracy_rule"]), "note")
        return body

    return _section("detect", "Detection", _guard("detect", build))


def _risk_section(run: _Run) -> str:
    rc, reason = run.load("detect", "risk_coverage.json")
    if rc is None:
        return _section("risk", "Risk–coverage", _notrun(reason or ""))

    def build() -> str:
        ms = rc.get("methods") or {}
        if not ms:
            return _notrun(str(rc.get("reason") or "risk_coverage.json has no methods"))
        det, _ = run.load("detect", "detect.json")
        listed = (det or {}).get("methods") or []
        order = [m for m in listed if m in ms] + [m for m in ms if m not in listed]
        n = f", {_int(rc['n'])} answers" if _isnum(rc.get("n")) else ""
        base = (f", accuracy when answering everything {_pct(rc['base_accuracy'])}%"
                if _isnum(rc.get("base_accuracy")) else "")
        body = _p(f"Set: {_esc(rc.get('set', '—'))}{n}{base}. Answers are withheld starting with the most "
                  "hallucination-like score; a better detector keeps accuracy high at low coverage. AURC = area under "
                  "the accuracy–coverage curve (higher is better).", "note")
        body += _img(figures.risk_coverage(ms, order), "risk-coverage curves")
        rows = []
        for m in order:
            e = ms[m]
            draws = (f"{_f(e['aurc_draws_mean'])} ± {_f(e.get('aurc_draws_sd'))}" if _isnum(e.get("aurc_draws_mean"))
                     else "")
            rows.append([_esc(m), _f(e.get("aurc")), _ci(e.get("aurc_ci")), draws])
        body += _table(["method", "AURC", "95% CI", "per random draw (mean ± sd)"], rows, {1, 2, 3})
        return body

    return _section("risk", "Risk–coverage", _guard("detect", build))


def _intervene_section(run: _Run) -> str:
    iv, reason = run.load("intervene", "intervene.json")
    if iv is None:
        return _section("intervene", "Intervention", _notrun(reason or ""))

    def build() -> str:
        benches = iv.get("benchmarks") or {}
        if not benches:
            return _notrun("intervene.json lists no benchmarks")
        body = _p(f"Every H-Neuron's activation ({_int(iv.get('n_neurons'))} neurons) is multiplied by α "
                  "(α = 1: unchanged, α = 0: silenced). The control scales the same number of random neurons. "
                  "Bands are 95% CIs; compliance = the model went along with a false premise, misleading context, "
                  "user pushback or harmful request.", "note")
        body += _img(figures.intervention_curves(benches), "compliance vs alpha per benchmark")
        srows = []
        for b, d in benches.items():
            sl, lsq = d.get("slope") or {}, d.get("slope_lsq") or {}
            sh, sr = sl.get("H"), sl.get("random")
            sources = ", ".join(f"{k} {v}" for k, v in sorted((d.get("judge_sources") or {}).items()))
            srows.append([_esc(b), _esc(d.get("description", "")), _int(d.get("n")), _esc(d.get("judge", "—")),
                          _esc(sources or "—"),
                          f"{_pct(sh)} {_ci(sl.get('H_ci'), _pct)}", f"{_pct(sr)} {_ci(sl.get('random_ci'), _pct)}",
                          _pct(lsq.get("H")), _pct(lsq.get("random"))])
        body += "<h3>Slopes (percentage points of compliance per unit α)</h3>"
        body += _table(["benchmark", "compliance means", "n", "judge", "verdicts by judge", "H", "random",
                        "H (least squares)", "random (least squares)"], srows, {2, 5, 6, 7, 8})
        body += _p("Slope = (compliance at the largest α − at the smallest α) / (α range); the least-squares slope "
                   "over all α is shown alongside.", "note")
        for b, d in benches.items():
            body += f"<h3>{_esc(b)}</h3>"
            alphas = sorted({*(d.get("H") or {}), *(d.get("random") or {})}, key=float)
            rows, warn = [], {}
            for a in alphas:
                row = [_esc(a)]
                for cond in ("H", "random"):
                    e = (d.get(cond) or {}).get(a) or {}
                    n = e.get("n")
                    # n counts the judged items; parse failures are the items the judge could not read
                    n_items = e.get("n_items")
                    if not _isnum(n_items) and _isnum(n):
                        n_items = n + (e.get("parse_failures") if _isnum(e.get("parse_failures")) else 0)
                    rate = {k: (e.get(k) / n_items if _isnum(e.get(k)) and _isnum(n_items) and n_items else None)
                            for k in ("parse_failures", "truncated")}
                    for k, r in rate.items():
                        if _isnum(r) and r > RATE_WARN:
                            warn.setdefault((cond, k.replace("_", " ")), []).append((a, r))
                    row += [f"{_pct(e.get('compliance'))} {_ci(e.get('ci'), _pct)}", _int(n),
                            _pct(rate["parse_failures"]), _pct(rate["truncated"])]
                rows.append(row)
            body += _table(["α", "H compliance %", "n judged", "parse fail %", "truncated %",
                            "random compliance %", "n judged", "parse fail %", "truncated %"], rows, set(range(9)),
                           ["hrow" if float(a) == 1.0 else "" for a in alphas])
            if warn:
                text = "; ".join(f"{cond} {kind} at α = {', '.join(a for a, _ in hits)} (up to "
                                 f"{_pct(max(r for _, r in hits))}%)" for (cond, kind), hits in warn.items())
                body += _p(f"Above {_pct(RATE_WARN, 0)}%: {_esc(text)}. Parse failures are left out of the compliance "
                           "rate and truncated answers are judged as cut off, so high rates can bend the curve.", "note")
        return body

    return _section("intervene", "Intervention", _guard("intervene", build))


# Which validated judge each stage's verdicts come from (task keys of the judge card).
_JUDGE_USES = (("responses", "triviaqa", "TriviaQA correct / wrong (responses)"),
               ("detect", "triviaqa", "QA correct / wrong (detect)"),
               ("intervene:falseqa", "falseqa", "FalseQA accepted / refused (intervene)"),
               ("intervene:jailbreak", "jailbreak", "jailbreak harmful / safe (intervene)"),
               ("intervene:faitheval", "mc", "FaithEval option parser (intervene)"),
               ("intervene:sycophancy", "triviaqa", "sycophancy correct / wrong (intervene)"))


def _judges_section(run: _Run) -> str:
    """Every judge the run used with its measured agreement (the packaged judge card)."""
    from hneurons.judges.rules import judge_card

    def build() -> str:
        card = judge_card()
        cfg = run.manifest.get("config") or {}
        iv, _ = run.load("intervene", "intervene.json")
        benches = set((iv or {}).get("benchmarks") or {})
        rows = []
        for use, task, what in _JUDGE_USES:
            stage, _, bench = use.partition(":")
            if run.stage_reason(stage) or not (run.root / stage / "_done.json").is_file() or (bench and bench not in benches):
                continue
            kind = ((cfg.get("intervene" if stage == "intervene" else "responses") or {}).get("judge")) or "rule"
            c = card.get(task) or {}
            llm = kind == "llm" and task != "mc"
            measured = c.get("n") and not llm
            rows.append([_esc(what), _esc("LLM judge (offline judge as fallback)" if llm else c.get("judge", "—")),
                         _int(c.get("n")) if measured else "—",
                         f"{_pct(c.get('agreement'))} {_ci(c.get('ci95'), _pct)}" if measured else "—",
                         _esc(f"{c.get('method', '')}; {c.get('validation', '')}" if measured
                              else ("not measured here: compare it with the references first" if llm
                                    else c.get("note", "no judge card entry")))])
        if not rows:
            return _notrun("no finished stage used a judge")
        return (_table(["verdicts", "judge", "n", "agreement % (95% CI)", "measured on"], rows, {2, 3})
                + _p("Agreement with GPT-4o verdicts on the packaged judge-validation sets (Wilson intervals), as "
                     "written by benchmarks/judges.py into judge_validation/judge_card.json.", "note"))

    return _section("judges", "Judges", build())


def _origin_section(run: _Run) -> str:
    origin, reason = _load_origin(run)
    if origin is None:
        return _section("origin", "Origin (base model)", _notrun(reason or ""))

    def build() -> str:
        body = ""
        tr = origin.get("transfer") or {}
        body += "<h3>Backward transfer: the instruct model's probe applied to the base model</h3>"
        if tr:
            body += _img(figures.transfer_bars(tr), "transfer AUROC per set")
            body += _table(["set", "n", "AUROC base", "95% CI", "accuracy base %", "AUROC instruct", "AUROC random"],
                           [[_esc(s), _int(t.get("n")), _f(t.get("auroc")), _ci(t.get("auroc_ci")),
                             _pct(t.get("accuracy")), _f(t.get("instruct_auroc")), _f(t.get("random_auroc"))]
                            for s, t in tr.items()], {1, 2, 3, 4, 5, 6})
        else:
            body += _notrun("origin.json has no transfer results")
        dr = origin.get("drift") or {}
        body += "<h3>Parameter drift from base to instruct</h3>"
        if dr:
            if dr.get("hist"):
                body += _img(figures.drift_histogram(dr["hist"], dr.get("mean_rank_h")), "drift rank histogram")
            body += _table(["", "value"], [
                ["neurons", _int(dr.get("n_neurons"))], ["H-Neurons", _int(dr.get("n_h"))],
                ["mean normalised rank of H-Neurons", _f(dr.get("mean_rank_h"))],
                ["median normalised rank", _f(dr.get("median_rank_h"))],
                [f"Welch t (alternative: {_esc(dr.get('alternative', '—'))})", _f(dr.get("t_stat"), 2)],
                ["t-test p", _f(dr.get("t_p"), 4)], ["permutation p", _f(dr.get("perm_p"), 4)]], {1})
            body += _p("Rank 0 = the neuron that changed most in instruction tuning, 1 = least; random neurons "
                       "average 0.5. A mean rank above 0.5 means H-Neurons changed less than typical neurons.", "note")
        else:
            body += _notrun("origin.json has no drift results")
        return body

    return _section("origin", "Origin (base model)", _guard("origin", build))


_SECTIONS: tuple[tuple[str, str, Callable[[_Run], str]], ...] = (
    ("summary", "Claims", _summary_section),
    ("manifest", "Manifest", _manifest_section),
    ("responses", "Responses", _responses_section),
    ("probe", "H-Neurons", _probe_section),
    ("detect", "Detection", _detect_section),
    ("risk", "Risk–coverage", _risk_section),
    ("intervene", "Intervention", _intervene_section),
    ("origin", "Origin", _origin_section),
    ("judges", "Judges", _judges_section),
)


def _open(root: Path) -> _Run:
    if not root.is_dir():
        raise StageError(f"run directory {root} does not exist; pass the folder `hneurons run` wrote")
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise StageError(f"{root} has no manifest.json, so it is not a run directory; run `hneurons run` first")
    manifest = read_json(mpath)
    if not isinstance(manifest, dict):
        raise StageError(f"{mpath} is not a JSON object; it was not written by hneurons")
    return _Run(root, manifest)


def render_report(run_dir: str | Path) -> str:
    """The report for a run directory as one self-contained HTML page."""
    run = _open(Path(run_dir))
    info = run.manifest.get("model") or {}
    model = info.get("name") or ((run.manifest.get("config") or {}).get("model") or {}).get("name") or "unknown model"
    nav = "<nav>" + "".join(f'<a href="#{sid}">{_esc(label)}</a>' for sid, label, _ in _SECTIONS) + "</nav>"
    head = (f"<h1>H-Neurons report: {_esc(model)}</h1>"
            f'<p class="sub">run <code>{_esc(run.root.name)}</code> · created {_esc(run.manifest.get("created", "—"))}'
            f' · model fingerprint <code>{_esc(info.get("fingerprint", "—"))}</code></p>{nav}')
    body = head + "\n".join(build(run) for _, _, build in _SECTIONS)
    template = resources.files("hneurons.report").joinpath("template.html").read_text(encoding="utf-8")
    return template.replace("{{title}}", _esc(f"H-Neurons report: {model}")).replace("{{body}}", body)


def write_report(run_dir: str | Path) -> Path:
    """Render ``<run_dir>/report.html`` (atomically) and return its path."""
    root = Path(run_dir)
    text = render_report(root)
    out = root / "report.html"
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out
