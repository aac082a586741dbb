"""How good the label-blind answer spans are: agreement with GPT-4o's answer tokens, alias recall
on faithful answers, and the span-length ratio of the two classes (a ratio far from 1 would let span
length alone separate them)."""

from __future__ import annotations

from collections.abc import Sequence as Seq
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hneurons.text.locator_llm import LLMSpanLocator

def _gpt4o_answer_text(tokens: Seq[str]) -> str:
    """GPT-4o's answer-token list (raw vocabulary pieces with ``Ġ``/``▁``) as plain text."""
    return "".join(tokens).replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\n").strip()


def _f1(pred: str, gold: str) -> float:
    from hneurons.judges.rules import normalize_answer

    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum(min(p.count(w), g.count(w)) for w in set(p))
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(g)
    return 2 * prec * rec / (prec + rec)


def gpt4o_agreement(method: str = "phrase", path: str | Path | None = None,
                    llm: LLMSpanLocator | None = None) -> dict[str, Any]:
    """Agreement of a label-blind method with GPT-4o's answer tokens (the paper (arXiv 2512.01797) §2.7).

    Reference: the packaged ``judge_validation_triviaqa`` set (573 responses of three large models
    with the official GPT-4o extraction) or a user's copy at ``path``. Exact = equal after the
    judge's normalisation; F1 = SQuAD word F1. Rows whose GPT-4o list is empty are skipped
    (the paper's pitfall list, §8).
    """
    from hneurons.data import load_dataset
    from hneurons.text.locator import answer_chars
    from hneurons.judges.rules import normalize_answer

    exact = f1 = 0.0
    n = 0
    for rec in load_dataset("judge_validation_triviaqa", path):
        gold = _gpt4o_answer_text(rec.extra.get("answer_tokens") or [])
        response = rec.extra.get("response") or ""
        if not gold or not response.strip():
            continue
        got = answer_chars(rec.question, response, method, llm)
        pred = response[got[0]:got[1]] if got else ""
        exact += normalize_answer(pred) == normalize_answer(gold)
        f1 += _f1(pred, gold)
        n += 1
    return {"method": method, "n": n, "exact": round(exact / n, 4) if n else None,
            "token_f1": round(f1 / n, 4) if n else None}


def span_quality(rows: Seq[dict[str, Any]], method: str, llm: LLMSpanLocator | None = None) -> dict[str, Any]:
    """How the locator did on a run's labelled responses, plus its agreement with GPT-4o.

    ``rows`` are labelled responses with ``label``, ``span_start/end``, ``span_text``,
    ``span_status``, ``response_start/end`` and (faithful rows) ``matched_alias``. Alias recall:
    share of faithful answers whose span contains the alias the judge matched (goal ≥ 90 %);
    length ratio: mean span tokens of hallucinated / faithful answers (goal 0.67–1.5: a ratio far
    from 1 means span length alone would separate the classes).
    """
    from hneurons.judges.rules import match_alias

    ok = [r for r in rows if r.get("span_status") == "ok"]
    out: dict[str, Any] = {"method": method, "label_blind": method != "alias"}
    lengths: dict[int, list[int]] = {0: [], 1: []}
    fractions: dict[int, list[float]] = {0: [], 1: []}
    for r in ok:
        n = int(r["span_end"]) - int(r["span_start"])
        lengths[int(r["label"])].append(n)
        resp = max(1, int(r.get("response_end", 0)) - int(r.get("response_start", 0)))
        fractions[int(r["label"])].append(n / resp)
    for c, name in ((0, "faithful"), (1, "hallucinated")):
        out[f"mean_tokens_{name}"] = round(sum(lengths[c]) / len(lengths[c]), 3) if lengths[c] else None
        out[f"mean_fraction_{name}"] = round(sum(fractions[c]) / len(fractions[c]), 3) if fractions[c] else None
    f, h = out["mean_tokens_faithful"], out["mean_tokens_hallucinated"]
    out["length_ratio"] = round(h / f, 3) if f and h is not None else None
    faithful = [r for r in ok if int(r["label"]) == 0 and r.get("matched_alias")]
    # the judge's own matcher: "Khartoum (city)", "FRANCE" and "26 June 1945" match as the judge matched them
    hits = sum(match_alias(r["span_text"], [r["matched_alias"]]) is not None for r in faithful)
    out["alias_recall"] = round(hits / len(faithful), 4) if faithful else None
    out["alias_recall_n"] = len(faithful)
    out["gpt4o"] = gpt4o_agreement(method) if method in ("phrase", "response") else None
    return out
