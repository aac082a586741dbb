"""Sections and notes for results other stages are adding (issue 31): each is rendered only when its
file exists in the run directory, and says "not run" (with the reason) otherwise.

The files and fields read here (also in docs/RUNDIR.md; unknown fields are ignored, missing ones
show as "—"):

``intervene/qa.json``: the ``qa`` intervention family, held-out questions under α::

    {"alphas": [0.0, 0.5, 1.0, ...], "n_neurons": int,
     "sets": {"<set>": {"n": int, "description": str, "judge": str, "judge_task": str,
                        "H": {"<alpha>": {"n": int, "accuracy": p, "accuracy_ci": [lo, hi], "wrong": p,
                                          "wrong_ci": [..], "refusal": p, "refusal_ci": [..],
                                          "fabricated": p | null, "fabricated_ci": [..] | null}},
                        "random": {"<alpha>": {...same fields...}}}},
     "flips": [{"set", "item_id", "question", "condition": "H" | "random", "alpha",
                "verdict_at_1", "verdict", "answer_at_1", "answer"}]}

  Rates are fractions in [0, 1]; ``fabricated`` is for NonExist (an answer about an entity that does
  not exist), null elsewhere; ``flips`` lists items whose verdict at the extreme ``alpha`` differs
  from α = 1. ``judge_task`` names the judge-card entry whose agreement is printed beside the set.

``probe/c_rules.json``: which rule chose C, and what the other rules give::

    {"selected_rule": "paper" | "cv1se" | "stability",
     "rules": {"<rule>": {"description": str, "C": float | null, "n_selected": int, "per_mille": float,
                          "n_ci": [lo, hi], "n_resamples": int, "existence_holds": bool | null,
                          "detection_auroc": float | null, "detection_auroc_ci": [lo, hi],
                          "detection_holds": bool | null, "expected_false_selections": float | null,
                          "suppression": {"used": bool, "reason": str}, "note": str}}}

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

__all__ = ["MAX_FLIPS", "agreement", "c_rules", "card", "qa", "rules_note"]

MAX_FLIPS = 40  # flipped items listed on the page
RATES = tuple(r for r, _ in figures.QA_RATES)
# intervention benchmark → its judge-card task (the same mapping as the judges section)
BENCH_TASK = {"falseqa": "falseqa", "jailbreak": "jailbreak", "faitheval": "mc", "sycophancy": "triviaqa"}


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


def _rate_cell(rec: Any, rate: str) -> str | Cell:
    if not isinstance(rec, Mapping) or rec.get(rate) is None:
        return DASH
    return Cell(pct(rec.get(rate)), pct_ci(rec.get(f"{rate}_ci")))


def _set_table(s: Mapping[str, Any], rates: list[str]) -> Table:
    """One row per (α, condition): each rate in % with its CI."""
    rows = []
    for cond in ("H", "random"):
        curve = s.get(cond) or {}
        for a in sorted(curve, key=float):
            rec = curve[a]
            rows.append([num(float(a), 2), "H-Neurons" if cond == "H" else "random neurons",
                         count(rec.get("n") if isinstance(rec, Mapping) else None), *[_rate_cell(rec, r) for r in rates]])
    return Table.of(["α", "neurons scaled", "n", *[f"{r} % [95% CI]" for r in rates]], rows, range(2, 3 + len(rates)))


def _flips(flips: list[Any]) -> Table | None:
    rows = [[str(f.get("set", DASH)), str(f.get("condition", DASH)), num(f.get("alpha"), 2), str(f.get("question", "")),
             f"{f.get('verdict_at_1', DASH)}: {f.get('answer_at_1', '')}", f"{f.get('verdict', DASH)}: {f.get('answer', '')}"]
            for f in flips[:MAX_FLIPS] if isinstance(f, Mapping)]
    return Table.of(["set", "neurons", "α", "question", "at α = 1", "at α"], rows, [2]) if rows else None


def qa(run: Run) -> dict[str, Any]:
    """The qa family: accuracy / wrong / refusal / fabricated rates against α per held-out set."""
    data = run.need("intervene", "qa.json")
    sets = {k: v for k, v in (data.get("sets") or {}).items() if isinstance(v, Mapping)}
    if not sets:
        raise NotRun("intervene/qa.json lists no question sets")
    entries = card()
    per_set = []
    for name, s in sets.items():
        recs = [r for c in ("H", "random") for r in (s.get(c) or {}).values() if isinstance(r, Mapping)]
        rates = [r for r in RATES if any(x.get(r) is not None for x in recs)]
        per_set.append({"name": name, "description": str(s.get("description", "")), "n": count(s.get("n")),
                        "judge": str(s.get("judge", DASH)), "agreement": agreement(entries, s.get("judge_task")),
                        "table": _set_table(s, rates)})
    flips = data.get("flips") if isinstance(data.get("flips"), list) else []
    return {"n_neurons": data.get("n_neurons"), "figure": figures.qa_curves(sets), "sets": per_set,
            "flips": _flips(flips), "n_flips": len(flips), "max_flips": MAX_FLIPS}


def _holds(x: Any) -> str:
    return "holds" if x is True else "does not hold" if x is False else "not checked"


def c_rules(run: Run) -> dict[str, Any] | None:
    """The C-rule record as a table (None when probe/c_rules.json is absent or empty)."""
    data, _ = run.load("probe", "c_rules.json")
    rules = {k: v for k, v in ((data or {}).get("rules") or {}).items() if isinstance(v, Mapping)}
    if not rules:
        return None
    sel = (data or {}).get("selected_rule")
    rows = []
    for name, r in rules.items():
        supp = r.get("suppression") if isinstance(r.get("suppression"), Mapping) else {}
        rows.append([Cell(name, "(chose this run's neurons)" if name == sel else "", code=True),
                     str(r.get("description", "")), sig(r.get("C")),
                     Cell(count(r.get("n_selected")), f"{ci(r.get('n_ci'), count)} over {count(r.get('n_resamples'))} resamples"
                          if r.get("n_ci") else ""),
                     num(r.get("per_mille"), 3), _holds(r.get("existence_holds")),
                     Cell(num(r.get("detection_auroc")), ci(r.get("detection_auroc_ci"))), _holds(r.get("detection_holds")),
                     num(r.get("expected_false_selections"), 2),
                     ("on" if supp.get("used") else f"off: {supp.get('reason', 'no reason recorded')}") if supp else DASH])
    table = Table.of(["rule", "how C is chosen", "C", "H-Neurons [95% CI]", "‰", "existence (< 1‰)", "detection AUROC",
                      "detection", "expected false selections", "suppression term"], rows, [2, 3, 4, 6, 8])
    return {"selected": str(sel or DASH), "table": table}


def rules_note(run: Run, claim: str) -> str:
    """For a claim (``existence`` / ``detection``): which rule produced the neurons and how the
    claim fares under the others; "" when no C-rule record exists."""
    data, _ = run.load("probe", "c_rules.json")
    rules = {k: v for k, v in ((data or {}).get("rules") or {}).items() if isinstance(v, Mapping)}
    if not rules:
        return ""
    sel = (data or {}).get("selected_rule")
    others = [f"{name}: {_holds(r.get(f'{claim}_holds'))} ({count(r.get('n_selected'))} neurons"
              + (f", AUROC {num(r.get('detection_auroc'))})" if claim == "detection" else ")")
              for name, r in rules.items() if name != sel]
    head = f"The neurons come from the C rule '{sel}'."
    return head + (f" Under the other rules the {claim} claim: " + "; ".join(others) + "." if others else "")
