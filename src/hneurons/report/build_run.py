"""Data for the sections about the run as a whole: the claims, the manifest, the responses and the
judges. Each builder takes the :class:`~hneurons.report.run.Run` and returns the context of its
template (``templates/sections/<id>.html``), or raises :class:`~hneurons.report.run.NotRun`.
"""

from __future__ import annotations

from typing import Any

from hneurons.report import figures
from hneurons.report.claims import evaluate
from hneurons.report.fmt import DASH, count, isnum, num, pct, pct_ci, seconds
from hneurons.report.html import Cell, Table
from hneurons.report.run import REPORT_FILES, NotRun, Run

__all__ = ["judges", "manifest", "responses", "summary"]


def summary(run: Run) -> dict[str, Any]:
    """The four claims with their verdicts."""
    return {"claims": evaluate(run)}


def manifest(run: Run) -> dict[str, Any]:
    """Model, run, stage status and package versions from the manifest."""
    m = run.manifest
    model = m.get("model") or {}
    rows: list[list[str | Cell]] = [[k, str(model.get(k, DASH))] for k in
                                    ("name", "source", "fingerprint", "model_type", "n_layers", "d_ff", "n_neurons",
                                     "dtype", "device")]
    pf = m.get("prompt_format") or {}
    if pf:
        note = f" ({pf['reason']}; the config asked for {pf.get('configured')})" if pf.get("reason") else ""
        rows.append(["prompt format", f"{pf.get('used')}{note}"])
    budget = m.get("budget")
    if isinstance(budget, dict):
        recorded = budget.get("sizes") if isinstance(budget.get("sizes"), dict) else {}
        sizes = ", ".join(f"{k} {v.get('configured')} → {v.get('used')}" for k, v in recorded.items()
                          if isinstance(v, dict))
        rows.append(["time budget", f"{budget.get('minutes')} min; timing {budget.get('rate')} questions/s; "
                                    + (f"sizes scaled by {budget.get('scale')}: {sizes}" if sizes else
                                       "the configured sizes fit")])
    rows += [["seed", str(m.get("seed", DASH))], ["git commit", Cell(str(m.get("git_commit") or DASH), code=True)],
             ["created", str(m.get("created", DASH))]]
    stages = m.get("stages") or {}
    srows = []
    for s in REPORT_FILES:
        reason = run.stage_reason(s)
        has_done = (run.root / s / "_done.json").is_file()
        entry = stages.get(s) or {}
        status = "not run" if reason else entry.get("status") or ("done" if has_done else "not run")
        secs = entry.get("seconds")
        if secs is None:
            secs = run.done(s).get("seconds")
        note = reason or ("" if status == "done" else "no output yet")
        srows.append([s, str(status), seconds(secs) if status == "done" else DASH, note])
    versions = m.get("versions") or {}
    return {"model": Table.of(["field", "value"], rows),
            "stages": Table.of(["stage", "status", "time", "note"], srows, [2]),
            "versions": Table.of(["package", "version"], [[str(k), str(v)] for k, v in versions.items()])
            if versions else None}


def _span_quality(sp: Any) -> dict[str, Any] | None:
    """The answer-span locator: which rule, how it did, and whether it leaks the label."""
    if not isinstance(sp, dict):
        return None
    g = sp.get("gpt4o") or {}
    ratio = sp.get("length_ratio")
    rows = [["method", str(sp.get("method"))],
            ["alias recall (faithful spans containing the matched alias; goal ≥ 90%)",
             f"{pct(sp.get('alias_recall'))}% (n = {count(sp.get('alias_recall_n'))})"],
            ["mean span tokens faithful / hallucinated",
             f"{num(sp.get('mean_tokens_faithful'), 2)} / {num(sp.get('mean_tokens_hallucinated'), 2)}"],
            ["length ratio hallucinated / faithful (goal 0.67–1.5)", num(ratio, 2)],
            ["agreement with GPT-4o answer tokens (573 dev responses): exact / token F1",
             f"{pct(g.get('exact'))}% / {num(g.get('token_f1'), 3)}" if g else "not measured for this method"]]
    leaks = not sp.get("label_blind", True)
    skewed = not leaks and isnum(ratio) and not 0.67 <= ratio <= 1.5
    return {"table": Table.of(["", "value"], rows, [1]), "leaks": leaks, "skewed": skewed, "ratio": ratio}


def responses(run: Run) -> dict[str, Any]:
    """Sampling, the consistency filter, the splits and the answer-span locator."""
    stats = run.need("responses", "stats.json")
    k = stats.get("k")
    hist = stats.get("correct_count_hist") or []
    kept, train, held = stats.get("kept") or {}, stats.get("train") or {}, stats.get("heldout") or {}
    rows = [["questions sampled", count(stats.get("questions_sampled"))],
            ["samples per question (K)", count(k)], ["temperature", num(stats.get("temperature"), 2)],
            ["kept faithful (all K correct)", count(kept.get("faithful"))],
            ["kept hallucinated (all K wrong)", count(kept.get("hallucinated"))],
            ["mixed (dropped)", count(stats.get("mixed"))],
            ["questions with refusals (dropped)", count(stats.get("refusal_questions"))],
            ["questions with an empty answer (no answer, dropped)", count(stats.get("no_answer_questions"))],
            ["unlocated answer spans (dropped)", count(stats.get("unlocated_spans"))],
            ["train faithful / hallucinated", f"{count(train.get('faithful'))} / {count(train.get('hallucinated'))}"],
            ["held-out faithful / hallucinated", f"{count(held.get('faithful'))} / {count(held.get('hallucinated'))}"],
            ["generation time", seconds(stats.get("seconds"))],
            ["tokens generated", count(stats.get("tokens"))], ["tokens / s", num(stats.get("tok_s"), 1)]]
    screen = stats.get("screen")
    if isinstance(screen, dict):
        rows.append(["greedy screen: questions / correct / candidates",
                     f"{count(screen.get('questions'))} / {count(screen.get('greedy_correct'))} / "
                     f"{count(screen.get('candidates'))}"])
    hist_fig = figures.correct_count_histogram(hist, int(k) if isnum(k) else len(hist) - 1) if hist else None
    return {"table": Table.of(["", "value"], rows, [1]), "hist": hist_fig, "spans": _span_quality(stats.get("spans"))}


# Which validated judge each stage's verdicts come from (task keys of the judge card).
_JUDGE_USES = (("responses", "triviaqa", "TriviaQA correct / wrong (responses)"),
               ("detect", "triviaqa", "QA correct / wrong (detect)"),
               ("intervene:falseqa", "falseqa", "FalseQA accepted / refused (intervene)"),
               ("intervene:jailbreak", "jailbreak", "jailbreak harmful / safe (intervene)"),
               ("intervene:faitheval", "mc", "FaithEval option parser (intervene)"),
               ("intervene:sycophancy", "triviaqa", "sycophancy correct / wrong (intervene)"),
               ("intervene:qa", "triviaqa", "qa: held-out QA correct / wrong (intervene)"))


def _judge_row(card: dict[str, Any], task: str, what: str, kind: str) -> list[str]:
    c = card.get(task) or {}
    llm = kind == "llm" and task != "mc"
    if c.get("n") and not llm:
        return [what, str(c.get("judge", DASH)), count(c.get("n")),
                f"{pct(c.get('agreement'))} {pct_ci(c.get('ci95'))}", f"{c.get('method', '')}; {c.get('validation', '')}"]
    return [what, "LLM judge (offline judge as fallback)" if llm else str(c.get("judge", DASH)), DASH, DASH,
            "not measured here: compare it with the references first" if llm
            else str(c.get("note", "no judge card entry"))]


def judges(run: Run) -> dict[str, Any]:
    """Every judge the run used with its measured agreement (the packaged judge card)."""
    from hneurons.judges.rules import judge_card

    card = judge_card()
    cfg = run.manifest.get("config") or {}
    iv, _ = run.load("intervene", "intervene.json")
    benches = set((iv or {}).get("benchmarks") or {})
    rows = []
    for use, task, what in _JUDGE_USES:
        stage, _, bench = use.partition(":")
        if not run.finished(stage) or (bench and bench not in benches):
            continue
        kind = ((cfg.get("intervene" if stage == "intervene" else "responses") or {}).get("judge")) or "rule"
        rows.append(_judge_row(card, task, what, kind))
    if not rows:
        raise NotRun("no finished stage used a judge")
    return {"table": Table.of(["verdicts", "judge", "n", "agreement % (95% CI)", "measured on"], rows, [2, 3])}
