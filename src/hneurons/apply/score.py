"""Score (question, answer) pairs with a fitted probe, exactly as the pipeline featurised them.

:func:`score` re-renders ``[user, assistant=answer]`` as the features stage did
(:func:`~hneurons.text.spans.build_sequence`), takes the answer span from the run's label-blind
locator (:func:`~hneurons.text.locator.locate_answer_span`, the rule training used) and runs the
same extractor (:func:`~hneurons.core.features.extract_cett`), so a score is comparable with the
probe's training rows. Guarded generation (scoring while decoding) is :mod:`hneurons.apply.guard`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hneurons.apply.state import ScoringState, apply_probe, max_context_check, state_of
from hneurons.core.features import FeatureItem, extract_cett
from hneurons.core.generation import Generation, HFBackend, SamplingParams
from hneurons.errors import DataError
from hneurons.data.readers import check_output_path, format_of, iter_rows, where
from hneurons.data.rows import ScoreRow, problem
from hneurons.log import progress_bar
from hneurons.rundir import append_jsonl, atomic_path, read_jsonl
from hneurons.text.spans import SpanFailure, build_sequence, locate_answer

# --------------------------------------------------------------------------- score


def _check_items(items: Sequence[dict[str, Any]]) -> None:
    """Each item is a :class:`~hneurons.data.rows.ScoreRow` (the rule a score file's rows follow)."""
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise DataError(f"item {i}: expected an object with 'question' (and optionally 'answer'), got {type(item).__name__}")
        why = problem(ScoreRow, item)
        if why is not None:
            raise DataError(f"item {i}: {why}")


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
    """Items of a ``.jsonl``, ``.json`` or ``.csv`` file, each with an ``id`` (default: its line number).

    Read through :func:`hneurons.data.readers.iter_rows` (one error wording for every input); each
    row is a :class:`~hneurons.data.rows.ScoreRow` (``question`` required, ``answer`` optional but
    never empty); errors name ``FILE:LINE: field``.
    """
    p = Path(path)
    items, seen = [], {}
    for n, row in iter_rows(p, formats=(".jsonl", ".json", ".csv")):
        if "question" not in row and format_of(p) == ".csv":
            raise DataError(f"{where(p, 1)}: the CSV header has no 'question' column (columns: question, answer?, id?)")
        why = problem(ScoreRow, row)
        if why is not None:
            raise DataError(f"{where(p, n)}: {why}")
        item: dict[str, Any] = {"id": str(row["id"]) if row.get("id") not in (None, "") else str(n),
                                "question": row["question"]}
        if row.get("answer") is not None:
            item["answer"] = row["answer"]
        if item["id"] in seen:
            raise DataError(f"{where(p, n, 'id')} {item['id']!r} repeats line {seen[item['id']]}; ids must be unique")
        seen[item["id"]] = n
        items.append(item)
    return items


def item_key(item: dict[str, Any]) -> str:
    """What a scored row answers: its id and content (question, given answer, span), hashed.

    Ids default to line numbers, so the id alone cannot tell two input files apart; the content can.
    """
    text = json.dumps([item.get("id"), item["question"], item.get("answer"), item.get("span")], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def probe_key(state: ScoringState) -> str:
    """Which probe scored a row: its weights, scaler and scoring settings, and the model, hashed."""
    p = state.probe
    h = hashlib.sha256()
    for arr in (p.coef_, p.intercept_, getattr(p, "scaler_mean_", ()), getattr(p, "scaler_scale_", ())):
        h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
    h.update(json.dumps([state.suffix, state.chat, state.span_method, state.max_new_tokens,
                         getattr(state.loaded, "fingerprint", None)]).encode("utf-8"))
    return h.hexdigest()[:16]


def _resumable(out: Path, keys: set[str], probe: str, force: bool) -> set[str]:
    """Keys already scored in ``out`` by this probe; rows of another input or probe stop the run (or, with
    ``force``, are removed) instead of being counted as done."""
    rows = read_jsonl(out)
    foreign = [r for r in rows if r.get("probe") != probe or r.get("key") not in keys]
    if foreign and not force:
        why = "another probe or model" if foreign[0].get("probe") != probe else "another input file"
        raise DataError(f"{out} already holds {len(foreign)} row(s) scored from {why} (id {foreign[0].get('id')!r}); "
                        "write to a new --output file, or pass --force to replace them")
    if foreign:
        rows = [r for r in rows if r not in foreign]
        with atomic_path(out) as tmp:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return {r["key"] for r in rows}


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
    """Score a jsonl/csv file into a jsonl file, resumably, and return the counts.

    Each row records its :func:`item_key` and :func:`probe_key`; only rows with both matching are
    skipped, so a second input file or another run's probe never reads as "already scored".
    Results are appended batch by batch, so an interrupted run loses at most one batch. ``force``
    also accepts a model whose fingerprint differs from the probe's.
    """
    items = read_items(input_path)
    out = check_output_path(output_path)
    state = state_of(run_dir, model, force)
    probe = probe_key(state)
    keyed = [(item_key(it), it) for it in items]
    done = _resumable(out, {k for k, _ in keyed}, probe, force)
    todo = [(k, it) for k, it in keyed if k not in done]
    with progress_bar(total=len(todo), desc="scoring", unit="item", enabled=progress) as bar:
        for start in range(0, len(todo), batch_size):
            part = todo[start:start + batch_size]
            rows = score(state, [it for _, it in part], batch_size=batch_size, on_long=on_long)
            append_jsonl(out, [{**row, "key": k, "probe": probe} for (k, _), row in zip(part, rows)])
            bar.update(len(part))
    return {"items": len(items), "scored": len(todo), "skipped": len(items) - len(todo)}
