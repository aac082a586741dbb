"""The paper's four claims (the paper (arXiv 2512.01797) §2 existence and detection, §3 impact,
§4 origin) checked against one run with fixed rules, each with a verdict and a plain-language
account that names every evaluation set or benchmark and how it fared there.

Verdicts: *held* (the whole 95% interval clears the bar on every unit tested), *partly held* (on
some), *inconclusive* (point estimates clear it, intervals do not), *confounded* (detection beats
random neurons but not a trivial baseline), *did not hold*, *not tested*. A unit that was not
tested (a set skipped for too few items, a benchmark without a slope) never counts towards a
verdict, and the badge then says how many were: "held on 3 of 4 sets".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hneurons.detection.methods import TRIVIAL_BASELINES
from hneurons.report.build_hooks import QA_FAMILY, rules_note
from hneurons.report.fmt import ci, count, isnum, num, pct, sig
from hneurons.report.run import MALFORMED, Run

__all__ = ["Claim", "evaluate"]

# Below these sizes the report says that the numbers are indicative only.
SMALL_TRAIN_PER_CLASS = 200
SMALL_EVAL_N = 200
SMALL_BENCH_N = 100
SMALL_H = 10


@dataclass
class Claim:
    """One of the paper's claims and how it fared on this run (all plain text)."""

    name: str
    verdict: str  # held | partly held | inconclusive | confounded | did not hold | not tested
    text: str  # the numbers behind the verdict
    outcome: str = ""  # every set / benchmark / test by outcome: "Held on: a, b. Not tested: c (why)."
    scope: str = ""  # "3 of 4 sets" when some units were not tested

    @property
    def badge(self) -> str:
        """The verdict as the badge shows it, with the share of units tested when not all were."""
        return f"{self.verdict} on {self.scope}" if self.scope else self.verdict


# outcome of one unit → its vote in the verdict (None: neither pass nor fail)
_VOTE: dict[str, bool | None] = {"held": True, "confounded": None, "inconclusive": None, "did not hold": False}


@dataclass
class _Tally:
    """Per-unit outcomes of a claim (a unit is an evaluation set, a benchmark, a test)."""

    noun: str  # "sets", "benchmarks", "tests"
    outcomes: dict[str, str] = field(default_factory=dict)
    untested: dict[str, str] = field(default_factory=dict)  # unit → why

    def verdict(self) -> str:
        votes = [_VOTE[o] for o in self.outcomes.values()]
        if not votes:
            return "not tested"
        if all(v is True for v in votes):
            return "held"
        if all(v is False for v in votes):
            return "did not hold"
        return "partly held" if any(v is True for v in votes) else "inconclusive"

    def scope(self) -> str:
        total = len(self.outcomes) + len(self.untested)
        return f"{len(self.outcomes)} of {total} {self.noun}" if self.untested and self.outcomes else ""

    def summary(self) -> str:
        """"Held on: a, b. Inconclusive on: c. Not tested: d (why)." — every unit named once."""
        parts = []
        for outcome in _VOTE:
            units = [u for u, o in self.outcomes.items() if o == outcome]
            if units:
                parts.append(f"{outcome.capitalize()} on: {', '.join(units)}.")
        if self.untested:
            parts.append("Not tested: " + "; ".join(f"{u} ({why})" for u, why in self.untested.items()) + ".")
        return " ".join(parts)


def _lo(pair: Any) -> float | None:
    return pair[0] if isinstance(pair, Sequence) and len(pair) == 2 and isnum(pair[0]) else None


def _existence(run: Run, name: str) -> Claim:
    probe, reason = run.load("probe", "h_neurons.json")
    if probe is None:
        return Claim(name, "not tested", f"no probe: {reason}")
    n_pos, ratio = probe.get("n_positive"), probe.get("ratio_per_mille")
    parts = [f"The probe (C = {sig(probe.get('C'))}) selected {count(n_pos)} H-Neurons out of "
             f"{count(probe.get('n_neurons_total'))} neurons = {num(ratio, 3)}‰ (paper: 0.01–0.35‰)."]
    if not isnum(n_pos) or n_pos <= 0:
        verdict = "did not hold"
        parts.append("No neuron got a positive weight, so no H-Neurons exist at this C.")
    elif isnum(ratio) and ratio < 1.0:
        verdict = "held"
    else:
        verdict = "did not hold"
        parts.append("The selected set is not sparser than 1‰.")
    path, _ = run.load("probe", "path.json")
    sel = next((p for p in (path or {}).get("points", []) if p.get("C") == (path or {}).get("selected_C")), None)
    if sel and isnum(sel.get("heldout_acc")):
        parts.append(f"Held-out accuracy at the chosen C: {pct(sel['heldout_acc'])}% (0.5 = chance).")
        if sel["heldout_acc"] <= 0.5 and verdict == "held":
            verdict = "inconclusive"
            parts.append("The neurons do not predict held-out labels better than chance.")
    stats, _ = run.load("responses", "stats.json")
    per_class = min(((stats or {}).get("train") or {}).get(k, 0) or 0 for k in ("faithful", "hallucinated"))
    if stats and per_class < SMALL_TRAIN_PER_CLASS:
        parts.append(f"Caution: trained on only {per_class} questions per class (paper: 1,000); with so few, "
                     "which neurons are selected varies from sample to sample.")
    stab, _ = run.load("probe", "stability.json")
    if stab and isnum(stab.get("jaccard_mean")):
        parts.append(f"Stability across {stab.get('n_resamples')} resamples: Jaccard "
                     f"{num(stab['jaccard_mean'], 2)} ± {num(stab.get('jaccard_std'), 2)}.")
    note = rules_note(run, "existence")
    return Claim(name, verdict, " ".join(parts + ([note] if note else [])))


def _detection_set(s: str, d: Mapping[str, Any], tally: _Tally, parts: list[str]) -> set[str]:
    """Judge one evaluation set; returns the trivial baselines that match the H-Neuron CI."""
    m = d.get("methods") or {}
    h, r = m.get("h_neurons") or {}, m.get("random") or {}
    auc, interval, rnd = h.get("auroc"), h.get("auroc_ci"), r.get("auroc")
    if not (isnum(auc) and isnum(rnd)):
        tally.untested[s] = "AUROC not available"
        return set()
    lo = _lo(interval)
    trivial = {b: (m.get(b) or {}).get("auroc") for b in TRIVIAL_BASELINES}
    beaten_by = [b for b, v in trivial.items() if isnum(v) and not (lo is not None and lo > v)]
    note = ""
    if lo is not None and lo > rnd:
        tally.outcomes[s] = "confounded" if beaten_by else "held"
    elif auc > rnd:
        tally.outcomes[s] = "inconclusive"
        note = ", but its CI reaches that mean"
    else:
        tally.outcomes[s] = "did not hold"
    if isnum(d.get("n")) and d["n"] < SMALL_EVAL_N:
        note += f" (n = {d.get('n')}: small, CI is wide)"
    word = "above" if auc > rnd else "not above"
    parts.append(f"{s}: H-Neuron AUROC {num(auc)} {ci(interval)} is {word} random neurons ({num(rnd)}){note}.")
    if beaten_by:
        parts.append(f"{s}: confounded — " + ", ".join(f"{b} alone reaches AUROC {num(trivial[b])}" for b in beaten_by)
                     + ", which the H-Neuron CI does not clear.")
    return set(beaten_by) if tally.outcomes[s] == "confounded" else set()


def _detection(run: Run, name: str) -> Claim:
    """Held on a set only where the H-Neuron AUROC's CI clears the random-neuron mean *and* every
    trivial baseline (length, span shape); clearing random but not a trivial baseline is "confounded"."""
    detect, reason = run.load("detect", "detect.json")
    if detect is None:
        return Claim(name, "not tested", f"no detection results: {reason}")
    tally, parts, confounders = _Tally("sets"), [], set()
    for s, d in (detect.get("sets") or {}).items():
        confounders |= _detection_set(s, d, tally, parts)
    for s, why in (detect.get("skipped") or {}).items():
        tally.untested[s] = str(why)
    verdict = tally.verdict()
    if confounders and verdict != "did not hold":
        verdict = "confounded"
        parts.insert(0, "Confounded by " + ", ".join(sorted(confounders)) + ".")
    if detect.get("span_method") == "alias":
        parts.insert(0, "Warning: answer spans came from the label-aware parity rule (spans.method = alias): a correct "
                        "answer is averaged over its alias and a wrong one over the whole response, so span length "
                        "leaks the label and these numbers overstate detection.")
    note = rules_note(run, "detection")
    return Claim(name, verdict, " ".join(parts + ([note] if note else [])), tally.summary(), tally.scope())


def _rises(d: Mapping[str, Any]) -> bool | None:
    """Compliance rises with α beyond the control (True), within the noise (None), or not (False).
    The change must exceed the noise: a slope CI above 0, or end points whose CIs do not overlap."""
    slope = d.get("slope") or {}
    sh, sr = slope.get("H"), slope.get("random")
    if not (sh > 0 and (not isnum(sr) or sh > sr)):
        return False
    lo = _lo(slope.get("H_ci"))
    if lo is not None:
        return True if lo > 0 else None
    if d.get("H"):
        keys = sorted(d["H"], key=float)
        first, last = d["H"][keys[0]].get("ci") or [None, None], d["H"][keys[-1]].get("ci") or [None, None]
        if isnum(first[1]) and isnum(last[0]) and last[0] <= first[1]:
            return None
    return True


def _impact(run: Run, name: str) -> Claim:
    iv, reason = run.load("intervene", "intervene.json")
    if iv is None:
        return Claim(name, "not tested", f"no intervention results: {reason}")
    tally, parts = _Tally("benchmarks"), []
    for b, d in (iv.get("benchmarks") or {}).items():
        if d.get("family") == QA_FAMILY:  # hallucination under α, not compliance: the qa section shows it
            continue
        slope = d.get("slope") or {}
        sh, sr = slope.get("H"), slope.get("random")
        if not isnum(sh):
            tally.untested[b] = "no slope"
            continue
        ok = _rises(d)
        tally.outcomes[b] = {True: "held", None: "inconclusive", False: "did not hold"}[ok]
        word = {True: "rises", None: "rises, but within the noise", False: "does not rise more than the control"}[ok]
        small = f"; n = {d.get('n')} items is small" if isnum(d.get("n")) and d["n"] < SMALL_BENCH_N else ""
        parts.append(f"{b}: compliance {word} (slope {pct(sh)} pp per unit α vs random {pct(sr)}{small}).")
    return Claim(name, tally.verdict(), " ".join(parts), tally.summary(), tally.scope())


def _origin(run: Run, name: str) -> Claim:
    origin, reason = run.load("origin", "origin.json")
    if origin is None:
        return Claim(name, "not tested", f"origin analysis not run: {reason}")
    tally, parts = _Tally("tests"), []
    for s, t in (origin.get("transfer") or {}).items():
        auc, interval = t.get("auroc"), t.get("auroc_ci")
        if not isnum(auc):
            tally.untested[f"transfer on {s}"] = "no AUROC"
            continue
        lo = _lo(interval)
        ok = True if (auc > 0.5 and lo is not None and lo > 0.5) else (None if auc > 0.5 else False)
        tally.outcomes[f"transfer on {s}"] = {True: "held", None: "inconclusive", False: "did not hold"}[ok]
        parts.append(f"{s}: the instruct probe on the base model reaches AUROC {num(auc)} {ci(interval)}"
                     f"{'' if ok else ' (CI includes 0.5)' if ok is None else ' (not above chance)'}.")
    dr = origin.get("drift") or {}
    mr = dr.get("mean_rank_h")
    p = dr.get("t_p") if isnum(dr.get("t_p")) else dr.get("perm_p")
    if isnum(mr):
        ok = True if (mr > 0.5 and isnum(p) and p < 0.05) else (None if mr > 0.5 else False)
        tally.outcomes["parameter drift"] = {True: "held", None: "inconclusive", False: "did not hold"}[ok]
        n_h = dr.get("n_h")
        perm = f", permutation p = {num(dr['perm_p'], 4)}" if isnum(dr.get("perm_p")) else ""
        parts.append(f"Parameter drift: mean normalised rank of the {n_h} H-Neurons is {num(mr)} (0.5 = like random; "
                     f"higher = changed less), one-sided p = {num(p, 4)}{perm}.")
        if isnum(n_h) and n_h < SMALL_H:
            parts.append(f"With only {n_h} H-Neurons this test has little power.")
    return Claim(name, tally.verdict(), " ".join(parts), tally.summary(), tally.scope())


_CLAIMS: tuple[tuple[str, Callable[[Run, str], Claim]], ...] = (
    ("Existence: a very sparse set of neurons (< 1‰) predicts hallucination", _existence),
    ("Detection: H-Neurons detect hallucinations better than random neurons, on each evaluation set", _detection),
    ("Impact: amplifying H-Neurons (α > 1) raises over-compliance, more than random neurons", _impact),
    ("Origin: H-Neurons already exist in the base model and change little in instruction tuning", _origin),
)


def evaluate(run: Run) -> list[Claim]:
    """The four claims in the paper's order; a malformed result file makes its claim "not tested"."""
    out = []
    for name, check in _CLAIMS:
        try:
            out.append(check(run, name))
        except MALFORMED as exc:
            out.append(Claim(name, "not tested", f"a result file is malformed ({type(exc).__name__}: {exc})"))
    return out
