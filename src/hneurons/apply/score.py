"""Score (question, answer) pairs with a fitted probe, exactly as the pipeline featurised them.

:func:`score` re-renders ``[user, assistant=answer]`` as the features stage did
(:func:`~hneurons.text.spans.build_sequence`), takes the answer span from the run's label-blind
locator (:func:`~hneurons.text.locator.locate_answer_span`, the rule training used) and runs the
same extractor (:func:`~hneurons.core.features.extract_cett`), so a score is comparable with the
probe's training rows. Guarded generation (scoring while decoding) is :mod:`hneurons.apply.guard`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hneurons.apply.state import ScoringState, apply_probe, max_context_check, state_of
from hneurons.core.features import FeatureItem, extract_cett
from hneurons.core.generation import Generation, HFBackend, SamplingParams
from hneurons.errors import DataError
from hneurons.rundir import append_jsonl, read_jsonl
from hneurons.text.spans import SpanFailure, build_sequence, locate_answer

# --------------------------------------------------------------------------- score


def _check_items(items: Sequence[dict[str, Any]]) -> None:
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"item {i}: expected an object with 'question' (and optionally 'answer'), got {type(item).__name__}")
        q = item.get("question")
        if not isinstance(q, str) or not q.strip():
            raise DataError(f"item {i}: field 'question' is missing or empty")
        a = item.get("answer")
        if a is not None and (not isinstance(a, str) or not a.strip()):
            raise DataError(f"item {i}: field 'answer' is empty (leave it out to have the answer generated)")


def _greedy_answers(state: ScoringState, questions: list[str], batch_size: int) -> list[Generation]:
    """Greedy answers with the run's settings (what the model itself would say)."""
    backend = HFBackend(state.loaded.model, state.loaded.tokenizer, batch_size=batch_size)
    params = SamplingParams(temperature=0.0, max_new_tokens=state.max_new_tokens, stop=state.stop)
    return [g[0] for g in backend.generate([state.prompt(q) for q in questions], params, progress=False)]


def score(
    run_dir: str | Path | ScoringState,
    items: Sequence[dict[str, Any]],
    *,
    model: Any = None,
    force: bool = False,
    batch_size: int = 16,
    on_long: str = "truncate",
) -> list[dict[str, Any]]:
    """``p_hallucination`` of each ``{question, answer?, span?}`` under the run's probe, as in training.

    A missing ``answer`` is generated first (greedy, the run's ``max_new_tokens``). Each result has
    ``question, answer, generated, p_hallucination`` (None when no span could be located),
    ``span {start, end, text}`` (token indices in the chat sequence), ``span_status`` (``ok`` or the
    reason) and ``top_neurons`` (top 5 by ``coef · cett``); an ``id`` in the input is kept.
    """
    state = state_of(run_dir, model, force)
    _check_items(items)
    tok = state.loaded.tokenizer
    answers: list[str | None] = [it.get("answer") for it in items]
    missing = [i for i, a in enumerate(answers) if a is None]
    if missing:
        gens = _greedy_answers(state, [items[i]["question"] for i in missing], batch_size)
        for i, g in zip(missing, gens):
            answers[i] = g.text
    results: list[dict[str, Any]] = []
    feats: list[FeatureItem] = []
    located: list[int] = []
    for i, item in enumerate(items):
        out: dict[str, Any] = {"id": item["id"]} if "id" in item else {}
        out.update(question=item["question"], answer=answers[i], generated=i in missing, p_hallucination=None,
                   span=None, span_status="ok", top_neurons=[])
        results.append(out)
        seq = build_sequence(tok, state.user_text(item["question"]), answers[i] or "", chat=state.chat)
        # an explicit ``span`` (a substring of the answer) scores exactly those tokens; otherwise
        # the run's label-blind locator, as in training
        span = locate_answer(seq, item["span"]) if item.get("span") else state.locate(seq, item["question"])
        if isinstance(span, SpanFailure):
            out["span_status"] = span.reason
            continue
        cut = max_context_check(len(seq.input_ids), seq.prompt_end, state.max_context, on_long,
                                 f"item {item.get('id', i)}")
        out["span"] = {"start": span.start - cut, "end": span.end - cut, "text": span.text}
        if cut:
            out["truncated_tokens"] = cut
        feats.append(FeatureItem(str(i), tuple(seq.input_ids[cut:]), (span.start - cut, span.end - cut),
                                 (seq.prompt_end - cut, seq.response_end - cut)))
        located.append(i)
    if feats:
        cett = extract_cett(state.loaded.model, state.loaded.layout, feats, regions=("answer",),
                            batch_size=batch_size, pad_token_id=tok.pad_token_id or 0, progress=False)["answer"]
        p, tops = apply_probe(state, cett[:, state.record].astype(np.float64))
        for row, i in enumerate(located):
            results[i]["p_hallucination"] = float(p[row])
            results[i]["top_neurons"] = tops[row]
    return results


# --------------------------------------------------------------------------- files


def read_items(path: str | Path) -> list[dict[str, Any]]:
    """Items of a ``.jsonl`` or ``.csv`` file, each with an ``id`` (default: its line number).

    ``question`` is required, ``answer`` optional but never empty; errors name the line and field.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"input file {p} does not exist")
    rows: list[tuple[int, dict[str, Any]]] = []
    if p.suffix.lower() == ".csv":
        with p.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "question" not in reader.fieldnames:
                raise DataError(f"{p} line 1: the CSV header has no 'question' column (columns: question, answer?, id?)")
            for n, row in enumerate(reader, start=2):
                rows.append((n, {k: v for k, v in row.items() if k in ("id", "question", "answer")}))
    elif p.suffix.lower() in (".jsonl", ".json"):
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p} line {n}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{p} line {n}: expected a JSON object with 'question', got {type(obj).__name__}")
            rows.append((n, obj))
    else:
        raise DataError(f"{p}: unsupported input format {p.suffix!r}; use .jsonl or .csv with a 'question' field")
    items, seen = [], {}
    for n, row in rows:
        q = row.get("question")
        if not isinstance(q, str) or not q.strip():
            raise DataError(f"{p} line {n}: field 'question' is missing or empty")
        item: dict[str, Any] = {"id": str(row["id"]) if row.get("id") not in (None, "") else str(n), "question": q}
        if "answer" in row and row["answer"] is not None:
            a = row["answer"]
            if not isinstance(a, str) or not a.strip():
                raise DataError(f"{p} line {n}: field 'answer' is empty; give an answer or leave the field out to generate one")
            item["answer"] = a
        if item["id"] in seen:
            raise DataError(f"{p} line {n}: field 'id' {item['id']!r} repeats line {seen[item['id']]}; ids must be unique")
        seen[item["id"]] = n
        items.append(item)
    return items


def score_file(
    run_dir: str | Path | ScoringState,
    input_path: str | Path,
    output_path: str | Path,
    *,
    model: Any = None,
    force: bool = False,
    batch_size: int = 16,
    on_long: str = "truncate",
    progress: bool = True,
) -> dict[str, int]:
    """Score a jsonl/csv file into a jsonl file, resumably: ids already in the output are skipped.

    Results are appended batch by batch, so an interrupted run loses at most one batch.
    """
    items = read_items(input_path)
    out = Path(output_path)
    done = {str(r.get("id")) for r in read_jsonl(out, key=lambda r: str(r.get("id")))}
    todo = [it for it in items if it["id"] not in done]
    if todo:
        state = state_of(run_dir, model, force)
        bar = tqdm(total=len(todo), desc="scoring", unit="item", disable=not progress)
        for start in range(0, len(todo), batch_size):
            part = todo[start:start + batch_size]
            append_jsonl(out, score(state, part, batch_size=batch_size, on_long=on_long))
            bar.update(len(part))
        bar.close()
    return {"items": len(items), "scored": len(todo), "skipped": len(items) - len(todo)}
