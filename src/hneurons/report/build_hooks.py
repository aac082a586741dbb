"""Sections and notes for results the qa family and the C rules add (issue 31): each is rendered
only when its file exists in the run directory, and says "not run" (with the reason) otherwise.

The files are read as their producers write them (docs/RUNDIR.md; unknown fields are ignored,
missing ones show as "—"):

``intervene/qa.json`` (:mod:`hneurons.intervention.qa_summary`): the ``qa`` family, held-out
questions under α::

    {"sets": [SET, ...], "alphas": [0.0, 1.0, ...], "outcomes": ["correct", "wrong", "refusal", ...],
     "extremes": [0.0, 3.0],
     "rates": {SET: {"H" | "random": {ALPHA: {"n": int, "counts": {OUTCOME: int},
               "rates": {OUTCOME | "hallucinated" | "abstained": {"rate": p, "ci": [lo, hi]}}}}}},
     "transitions": {SET: {"H" | "random": {ALPHA: {"FROM->TO": int}}}},
     "flips": [{"set", "item_id", "question", "condition", "alpha",
                "at_1": {"outcome", "response"}, "at_alpha": {"outcome", "response"}}]}

  Accuracy is ``rates.correct``; the number of neurons and the judge come from the ``qa``
  benchmark of ``intervene/intervene.json``.

``probe/rules.json`` (:mod:`hneurons.stages.probe`): which rule chose C, and what every rule gives::

    {"rule": "paper" | "cv1se" | "stability",
     "rules": {RULE: {"C": float | null, "n_positive": int, "ratio_per_mille": float,
                      "existence_holds": bool | null, "heldout_acc": p, "heldout_auroc": p,
                      "details": {...}}},         # the rule's own record (hneurons.probe.rules)
     "existence_holds_under_chosen": bool | null, "existence_holds_under_others": bool | null,
     "suppression": {"used_by_paper", "used_by_cv1se", "resolvable", "reason", "baseline_acc",
                     "n_questions", "min_correct"},
     "n_positive_ci95": [lo, hi] | null, "n_positive_ci_resamples": int}

  A rule that was not computed has ``C: null`` and ``details: {"C": null, "not_computed": reason}``;
  ``n_positive_ci95`` is the bootstrap interval of the chosen rule's count (probe/stability.json).

The judge card (each judge's measured agreement, ``{judges: {<task>: {judge, n, agreement, ci95,
method, validation, note}}}``) is the packaged one, read through
:func:`hneurons.judges.rules.judge_card`; :func:`agreement` writes one entry beside a number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hneurons.report import figures
from hneurons.report.fmt import DASH, ci, count, isnum, num, pct, pct_ci, sig
from hneurons.report.html import Cell, Table
from hneurons.report.run import NotRun, Run

__all__ = ["MAX_FLIPS", "QA_FAMILY", "agreement", "card", "compliance_benchmarks", "qa", "rules", "rules_note"]

MAX_FLIPS = 40  # flipped items listed on the page
QA_FAMILY = "qa"  # intervene.json's family of the qa benchmark: hallucination rates, not compliance
# intervention benchmark → its judge-card task (the same mapping as the judges section)
BENCH_TASK = {"falseqa": "falseqa", "jailbreak": "jailbreak", "faitheval": "mc", "sycophancy": "triviaqa",
              "qa": "triviaqa"}
# qa set → the judge-card task of its correct / wrong verdicts; NonExist is judged by the refusal rule alone
QA_SET_TASK = {"triviaqa": "triviaqa", "nq_open": "triviaqa", "bioasq": "triviaqa"}
QA_SET_TITLE = {"triviaqa": "held-out TriviaQA questions", "nq_open": "held-out NQ-Open questions",
                "bioasq": "held-out BioASQ questions",
                "nonexist": "questions about entities that do not exist (a refusal is the faithful answer)"}
RULE_HOW = {"paper": "highest held-out accuracy (+ suppression term), the paper's rule",
            "cv1se": "group K-fold CV: the sparsest C within one standard error of the best",
            "stability": "stability selection: the largest C whose expected false selections stay under the limit"}


def card() -> dict[str, Any]:
    """The judge card's entries by task ({} when the package has none)."""
    from hneurons.judges.rules import judge_card

    return judge_card() or {}


def agreement(entries: Mapping[str, Any], task: str | None) -> str:
    """``"rule judge 98.9% [98.1, 99.4] (n = 1,000)"``, or why there is no measured agreement."""
    c = entries.get(task or "") if isinstance(entries, Mapping) else None
    if not isinstance(c, Mapping) or not isnum(c.get("agreement")):
        return "agreement not measured"
    return f"{c.get('judge', 'judge')} {pct(c['agreement'])}% {pct_ci(c.get('ci95'))} (n = {count(c.get('n'))})".strip()


def compliance_benchmarks(benchmarks: Any) -> dict[str, Mapping[str, Any]]:
    """The benchmarks of ``intervene.json`` that measure compliance: the ``qa`` family (its rate is
    hallucination, shown in the qa section) is left out, as from ``mean_slope_lsq_pp``."""
    if not isinstance(benchmarks, Mapping):
        return {}
    return {b: d for b, d in benchmarks.items() if isinstance(d, Mapping) and d.get("family") != QA_FAMILY}


# ---------------------------------------------------------------------------------------------- qa


def _m(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def _shown(name: str, outcomes: list[str], recs: list[Mapping[str, Any]]) -> list[str]:
    """The outcomes a set can have (any count above 0), accuracy always on the QA sets."""
    seen = [o for o in outcomes if any(isnum(_m(r.get("counts")).get(o)) and r["counts"][o] > 0 for r in recs)]
    if "correct" in outcomes and "correct" not in seen and "fabricated" not in seen and name != "nonexist":
        seen.insert(0, "correct")
    return seen


def _rate_cell(rec: Mapping[str, Any], outcome: str) -> str | Cell:
    r = _m(_m(rec.get("rates")).get(outcome))
    if not isnum(r.get("rate")):
        return DASH
    return Cell(pct(r["rate"]), pct_ci(r.get("ci")))


def _label(outcome: str) -> str:
    return "correct (accuracy)" if outcome == "correct" else outcome.replace("_", " ")


def _set_table(curves: Mapping[str, Any], shown: list[str]) -> Table:
    """One row per (α, condition): each outcome in % with its CI, then hallucinated (wrong + fabricated)."""
    cols = [*shown, "hallucinated"]
    rows, classes = [], []
    for cond in ("H", "random"):
        curve = _m(curves.get(cond))
        for a in sorted(curve, key=float):
            rec = _m(curve[a])
            rows.append([num(float(a), 2), "H-Neurons" if cond == "H" else "random neurons", count(rec.get("n")),
                         *[_rate_cell(rec, o) for o in cols]])
            classes.append("hrow" if float(a) == 1.0 else "")
    return Table.of(["α", "neurons scaled", "n", *[f"{_label(o)} % [95% CI]" for o in cols]], rows,
                    range(2, 3 + len(cols)), classes)


def _transitions(data: Mapping[str, Any], names: list[str]) -> Table | None:
    rows = []
    for s in names:
        for cond, per_alpha in _m(_m(data.get("transitions")).get(s)).items():
            for a, moved in sorted(_m(per_alpha).items(), key=lambda kv: float(kv[0])):
                text = ", ".join(f"{k.replace('->', ' → ')}: {count(v)}" for k, v in _m(moved).items()) or "none"
                rows.append([s, "H-Neurons" if cond == "H" else "random neurons (all seeds)", num(float(a), 2), text])
    return Table.of(["set", "neurons scaled", "α", "outcomes changed from α = 1 (items)"], rows, [2]) if rows else None


def _flips(flips: list[Any]) -> Table | None:
    def side(x: Any) -> str:
        x = _m(x)
        return f"{x.get('outcome', DASH)}: {x.get('response', '')}"

    rows = [[str(f.get("set", DASH)), str(f.get("condition", DASH)), num(f.get("alpha"), 2), str(f.get("question", "")),
             side(f.get("at_1")), side(f.get("at_alpha"))]
            for f in flips[:MAX_FLIPS] if isinstance(f, Mapping)]
    return Table.of(["set", "neurons", "α", "question", "at α = 1", "at α"], rows, [2]) if rows else None


def qa(run: Run) -> dict[str, Any]:
    """The qa family: per held-out set, every outcome's rate against α (H-Neurons and random control)."""
    data = run.need("intervene", "qa.json")
    rates = _m(data.get("rates"))
    listed = data.get("sets") if isinstance(data.get("sets"), list) else list(rates)
    names = [str(s) for s in listed if isinstance(rates.get(s), Mapping)]
    if not names:
        raise NotRun("intervene/qa.json lists no question sets")
    outcomes = [str(o) for o in data.get("outcomes") or []] if isinstance(data.get("outcomes"), list) else []
    if not outcomes:
        outcomes = sorted({o for s in names for c in rates[s].values() for r in _m(c).values()
                           for o in _m(_m(r).get("counts"))})
    iv, _ = run.load("intervene", "intervene.json")
    bench = _m(_m(_m(iv).get("benchmarks")).get("qa"))
    judge = str(bench.get("judge") or _m(iv).get("judge") or DASH)
    entries = card()
    per_set, shown = [], {}
    for s in names:
        curves = rates[s]
        recs = [_m(r) for c in ("H", "random") for r in _m(curves.get(c)).values()]
        shown[s] = _shown(s, outcomes, recs)
        h = _m(curves.get("H"))
        n = next((_m(h[a]).get("n") for a in h if float(a) == 1.0), None) if h else None
        task = QA_SET_TASK.get(s)
        per_set.append({"name": s, "description": QA_SET_TITLE.get(s, ""), "n": count(n),
                        "judge": judge if task else "refusal rule",
                        "agreement": agreement(entries, task) if task else "a refusal is the faithful answer",
                        "table": _set_table(curves, shown[s])})
    flips = data.get("flips") if isinstance(data.get("flips"), list) else []
    extremes = [a for a in data.get("extremes") or [] if isnum(a)] if isinstance(data.get("extremes"), list) else []
    return {"n_neurons": _m(iv).get("n_neurons"), "figure": figures.qa_curves(rates, shown), "sets": per_set,
            "transitions": _transitions(data, names), "extremes": ", ".join(num(a, 2) for a in extremes) or DASH,
            "flips": _flips(flips), "n_flips": len(flips), "max_flips": MAX_FLIPS}


# ------------------------------------------------------------------------------------------- rules


def _holds(x: Any) -> str:
    return "holds" if x is True else "does not hold" if x is False else "not checked"


def _load_rules(run: Run) -> tuple[Mapping[str, Any], dict[str, Mapping[str, Any]]]:
    data, _ = run.load("probe", "rules.json")
    data = _m(data)
    return data, {str(k): v for k, v in _m(data.get("rules")).items() if isinstance(v, Mapping)}


def _expected_false(d: Mapping[str, Any]) -> Any:
    """Stability selection's bound on falsely selected neurons at the chosen C."""
    Cs, bound = d.get("Cs"), d.get("expected_false_bound")
    if isinstance(Cs, list) and isinstance(bound, list) and d.get("C") in Cs and len(bound) == len(Cs):
        return bound[Cs.index(d["C"])]
    return None


def _notes(name: str, d: Mapping[str, Any], supp: Mapping[str, Any]) -> str:
    """What a rule's ``details`` and the suppression record say about its choice."""
    if d.get("not_computed"):
        return f"not computed: {d['not_computed']}"
    notes = []
    if name == "cv1se":
        notes.append(f"{count(d.get('folds'))} folds; best C {sig(d.get('best_C'))}")
    if name == "stability":
        notes.append(f"expected false selections ≤ {num(_expected_false(d), 2)} (limit {num(d.get('ev_max'), 2)}); "
                     f"kept in ≥ {num(d.get('pi'), 2)} of {count(d.get('subsamples'))} half-sample fits")
        if d.get("bound_met") is False:
            notes.append("no C met the limit: the smallest C is taken")
        if isnum(d.get("n_stable_not_positive_in_full_fit")) and d["n_stable_not_positive_in_full_fit"] > 0:
            notes.append(f"{count(d['n_stable_not_positive_in_full_fit'])} stable neurons lack a positive weight in the "
                         "full fit and are left out")
    if name in ("paper", "cv1se"):
        used = supp.get(f"used_by_{name}", d.get("suppression_used"))
        reason = str(supp.get("reason") or "")
        notes.append("suppression term on" if used else "suppression term off"
                     + (f" ({reason.removeprefix('off: ')})" if reason.startswith("off") else ""))
    return "; ".join(notes)


def rules(run: Run) -> dict[str, Any] | None:
    """probe/rules.json as a table, one row per C rule (None when the file is absent or has no rules)."""
    data, rs = _load_rules(run)
    if not rs:
        return None
    sel = data.get("rule")
    supp = _m(data.get("suppression"))
    rows, classes = [], []
    for name, r in rs.items():
        d = _m(r.get("details"))
        chosen = name == sel
        n_ci = data.get("n_positive_ci95") if chosen else None
        rows.append([Cell(name, "(chose this run's neurons)" if chosen else "", code=True), RULE_HOW.get(name, ""),
                     sig(r.get("C")),
                     Cell(count(r.get("n_positive")),
                          f"{ci(n_ci, count)} over {count(data.get('n_positive_ci_resamples'))} resamples" if ci(n_ci) else ""),
                     num(r.get("ratio_per_mille"), 3), _holds(r.get("existence_holds")), pct(r.get("heldout_acc")),
                     num(r.get("heldout_auroc")), _notes(name, d, supp)])
        classes.append("hrow" if chosen else "")
    table = Table.of(["rule", "how C is chosen", "C", "H-Neurons [95% CI]", "‰", "existence (< 1‰)",
                      "held-out accuracy %", "held-out AUROC", "notes"], rows, [2, 3, 4, 6, 7], classes)
    gate = (f"Suppression term: {supp.get('reason')} (accuracy at α = 1: {pct(supp.get('baseline_acc'))}%; "
            f"at least {count(supp.get('min_correct'))} correct answers needed for cv1se).") if supp.get("reason") else ""
    return {"selected": str(sel or DASH), "table": table, "suppression": gate,
            "others": _holds(data.get("existence_holds_under_others"))}


def rules_note(run: Run, claim: str) -> str:
    """For a claim (``existence`` / ``detection``): which rule produced the neurons and how the
    claim (existence) or the probe's held-out AUROC (detection) fares under the others; "" when
    no C-rule record exists."""
    data, rs = _load_rules(run)
    if not rs:
        return ""
    sel = data.get("rule")
    others = []
    for name, r in rs.items():
        if name == sel:
            continue
        why = _m(r.get("details")).get("not_computed")
        if why or r.get("C") is None:
            others.append(f"{name}: not computed")
        elif claim == "detection":
            others.append(f"{name}: AUROC {num(r.get('heldout_auroc'))} ({count(r.get('n_positive'))} neurons)")
        else:
            others.append(f"{name}: {_holds(r.get('existence_holds'))} ({count(r.get('n_positive'))} neurons)")
    head = f"The neurons come from the C rule '{sel}'."
    what = "the existence claim" if claim == "existence" else "the probe's held-out AUROC"
    return head + (f" Under the other rules {what}: " + "; ".join(others) + "." if others else "")
