"""Use a fitted probe on new text: score (question, answer) pairs and guard generation.

Two ways to get ``p_hallucination`` for an answer, built to agree:

* :func:`score` re-renders ``[user, assistant=answer]`` exactly as the features stage did
  (:func:`~hneurons.text.spans.build_sequence`), takes the answer span from the run's label-blind
  locator (:func:`~hneurons.text.locator.locate_answer_span`, the rule training used) and
  runs the same extractor (:func:`~hneurons.core.features.extract_cett`), so a score is comparable with
  the probe's training rows.
* :func:`guarded_generate` records the CETT of the probe's non-zero neurons *while generating*
  (:func:`~hneurons.core.hooks.record_cett` inside the decoding loop, optionally under the α hook of
  :func:`~hneurons.core.hooks.scale_neurons`), so scoring costs no second forward pass.

Off-by-one: the activations at position t come from the forward call whose *input* is token t.
Prefill covers the prompt; decode call c (c ≥ 1) is fed generated token c-1. A row that stops on
EOS has fed all its tokens (the last one produced the EOS logits), but a row cut by the length
limit never feeds its last token; one extra decode step feeds it, so the guarded span covers the
same tokens as :func:`score` and both give the same probability (tested to 1e-3).
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hneurons.config import PAPER_SUFFIX, Config, check_guard, load_config
from hneurons.errors import ConfigError, DataError, FingerprintMismatch, StageError
from hneurons.core.features import FeatureItem, extract_cett
from hneurons.core.generation import Generation, HFBackend, SamplingParams, _row_seed
from hneurons.core.hooks import record_cett, scale_neurons
from hneurons.probe.estimator import HNeuronProbe
from hneurons.rundir import RunDir, append_jsonl, read_jsonl
from hneurons.text.locator import answer_chars, locate_answer_span, make_llm_locator, token_char_offsets
from hneurons.text.spans import Span, SpanFailure, build_sequence, locate_answer, render_prompt

__all__ = [
    "ABSTAIN_TEXT",
    "ScoringState",
    "guarded_generate",
    "load_state",
    "read_items",
    "score",
    "score_file",
]

ABSTAIN_TEXT = "I'm not confident enough to answer that."
TOP_NEURONS = 5
ON_LONG = ("truncate", "refuse")


@dataclass
class ScoringState:
    """Everything needed to score or guard: the model, the probe and the run's prompt settings.

    ``record`` are the probe's non-zero neurons (all the probe reads); ``h_neurons`` its positive
    ones, the H-Neurons that α scales.
    """

    loaded: Any  # LoadedModel or an object with .model, .tokenizer, .layout, .name, .fingerprint
    probe: HNeuronProbe
    chat: bool = True
    suffix: str = PAPER_SUFFIX
    max_new_tokens: int = 50
    run_dir: Path | None = None
    span_method: str = "phrase"  # the run's spans.method: the same label-blind rule as training
    span_llm: Any = None  # an LLMSpanLocator for span_method = "llm"

    def __post_init__(self) -> None:
        n = self.loaded.layout.n_neurons
        if int(self.probe.n_features_in_) != n:
            raise FingerprintMismatch(
                f"the probe has {self.probe.n_features_in_} neuron weights but model {self.loaded.name} has {n} "
                "neurons; use the model the probe was fitted on"
            )
        coef = np.asarray(self.probe.coef_)
        self.record = np.flatnonzero(coef)
        self.h_neurons = np.flatnonzero(coef > 0)

    @property
    def max_context(self) -> int | None:
        """The model's context length (``max_position_embeddings``), or None when it has none."""
        value = getattr(getattr(self.loaded.model, "config", None), "max_position_embeddings", None)
        return int(value) if isinstance(value, int) and value > 0 else None

    def user_text(self, question: str) -> str:
        """The user turn as in training: question, a space, the suffix (unless already there)."""
        q = question.strip()
        s = self.suffix.strip()
        if not s or q.endswith(s):
            return q
        return f"{q} {self.suffix}".strip()

    def prompt(self, question: str) -> str:
        """The rendered prompt a response to ``question`` is generated from."""
        return render_prompt(self.loaded.tokenizer, self.user_text(question), chat=self.chat)

    @property
    def use_span_method(self) -> str:
        """The locator used on new text: the run's rule; the label-aware parity rule ``alias`` has
        no gold answer at use time, so it scores the whole response (what it used for wrong answers)."""
        return "response" if self.span_method == "alias" else self.span_method

    def locate(self, seq: Any, question: str) -> Span | SpanFailure:
        """The answer span of a rendered (question, answer) sequence, as in training."""
        return locate_answer_span(seq, question, self.use_span_method, self.span_llm)

    @property
    def stop(self) -> tuple[str, ...]:
        """Base-model prompts stop at the first newline, as when the run sampled them."""
        return () if self.chat else ("\n",)


def _run_config(manifest: dict[str, Any], path: Path) -> Config:
    recorded = manifest.get("config")
    if not isinstance(recorded, dict):
        raise StageError(f"{path} has no 'config'; it was not written by `hneurons run`")
    flat = {f"{s}.{k}": v for s, sec in recorded.items() if isinstance(sec, dict) for k, v in sec.items()}
    if "seed" in recorded:
        flat["seed"] = recorded["seed"]
    return load_config("paper", overrides=flat)


def load_state(run_dir: str | Path, *, model: Any = None, force: bool = False) -> ScoringState:
    """Read a run's probe and config and load (or check) the model it was fitted on.

    ``model`` (a :class:`~hneurons.core.models.LoadedModel`) is used instead of loading the run's model;
    a model whose fingerprint differs from the run's is refused unless ``force``.
    """
    root = Path(run_dir)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise StageError(f"{root} is not a run directory (no manifest.json); pass the folder `hneurons run` wrote")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{manifest_path} is not valid JSON ({exc}); restore it or re-run the pipeline") from None
    probe_path = root / "probe" / "probe.safetensors"
    if not probe_path.is_file():
        raise StageError(f"{root} has no fitted probe ({probe_path} is missing); run `hneurons probe {root}` first")
    RunDir(root).verify("probe")  # a probe changed since the probe stage wrote it is refused, not used
    cfg = _run_config(manifest, manifest_path)
    probe = HNeuronProbe.load(probe_path)
    run_fp = None
    h_path = root / "probe" / "h_neurons.json"
    if h_path.is_file():
        try:
            run_fp = json.loads(h_path.read_text()).get("model_fingerprint")
        except json.JSONDecodeError:
            run_fp = None
    run_fp = run_fp or (manifest.get("model") or {}).get("fingerprint")
    if model is None:
        from hneurons.core.models import load_model

        m = cfg.model
        model = load_model(m.name, dtype=m.dtype, device=m.device, device_map=m.device_map,
                           trust_remote_code=m.trust_remote_code)
    if run_fp and model.fingerprint != run_fp and not force:
        raise FingerprintMismatch(
            f"{root} was fitted on model {run_fp} but {model.name} is {model.fingerprint}; score with the run's "
            "model (--model) or pass --force to use this one anyway"
        )
    return ScoringState(model, probe, chat=cfg.model.prompt_format == "chat", suffix=cfg.responses.suffix,
                        max_new_tokens=cfg.responses.max_new_tokens, run_dir=root, span_method=cfg.spans.method,
                        span_llm=make_llm_locator(cfg.spans, root / "spans_cache"))


def _state(run: str | Path | ScoringState, model: Any, force: bool) -> ScoringState:
    return run if isinstance(run, ScoringState) else load_state(run, model=model, force=force)


# --------------------------------------------------------------------------- probe application


def _apply_probe(state: ScoringState, X_nz: np.ndarray) -> tuple[np.ndarray, list[list[dict[str, Any]]]]:
    """p_hallucination and the top contributing neurons for rows of CETT over ``state.record``.

    The probe reads only its non-zero columns, so a full-width row with zeros elsewhere gives
    exactly :meth:`HNeuronProbe.decision_function` of the full feature vector.
    """
    probe, d_ff = state.probe, state.loaded.layout.d_ff
    X = np.zeros((X_nz.shape[0], int(probe.n_features_in_)), dtype=np.float64)
    X[:, state.record] = X_nz
    p = probe.predict_proba(X)[:, 1] if X.shape[0] else np.empty(0)
    w = np.asarray(probe.coef_)[state.record]
    if hasattr(probe, "scaler_mean_"):
        contrib = w * (X_nz - probe.scaler_mean_[state.record]) / probe.scaler_scale_[state.record]
    else:
        contrib = w * X_nz
    tops = []
    for row in range(X_nz.shape[0]):
        order = np.argsort(-contrib[row], kind="stable")[:TOP_NEURONS]
        tops.append([{"layer": int(state.record[j] // d_ff), "neuron": int(state.record[j] % d_ff),
                      "contribution": float(contrib[row, j]), "cett": float(X_nz[row, j]), "weight": float(w[j])}
                     for j in order])
    return p, tops


def _max_context_check(n: int, keep_from: int, limit: int | None, on_long: str, what: str) -> int:
    """How many tokens to drop from the left of a sequence of ``n`` tokens (0 when it fits).

    Only tokens before ``keep_from`` (the prompt) may be dropped; a response that alone exceeds the
    context cannot be scored.
    """
    if on_long not in ON_LONG:
        raise ConfigError(f"on_long must be one of {', '.join(ON_LONG)}, got {on_long!r}")
    if limit is None or n <= limit:
        return 0
    if on_long == "refuse":
        raise DataError(f"{what} has {n} tokens, more than the model's context ({limit}); shorten it or use on_long=truncate")
    cut = n - limit
    if cut > keep_from:
        raise DataError(f"{what}: the response alone needs {n - keep_from} tokens, more than the model's context ({limit}); shorten it")
    warnings.warn(f"{what} has {n} tokens > context {limit}; dropped the first {cut} prompt tokens", stacklevel=3)
    return cut


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
    state = _state(run_dir, model, force)
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
        cut = _max_context_check(len(seq.input_ids), seq.prompt_end, state.max_context, on_long,
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
        p, tops = _apply_probe(state, cett[:, state.record].astype(np.float64))
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
        state = _state(run_dir, model, force)
        bar = tqdm(total=len(todo), desc="scoring", unit="item", disable=not progress)
        for start in range(0, len(todo), batch_size):
            part = todo[start:start + batch_size]
            append_jsonl(out, score(state, part, batch_size=batch_size, on_long=on_long))
            bar.update(len(part))
        bar.close()
    return {"items": len(items), "scored": len(todo), "skipped": len(items) - len(todo)}


# --------------------------------------------------------------------------- guarded generation


@dataclass
class _Decoded:
    generation: Generation
    cett: np.ndarray  # [len(token_ids), k]: CETT of each generated token when it was fed
    prompt_len: int


class _RecordingDecoder(HFBackend):
    """:class:`HFBackend`'s decoding loop, unchanged, plus per-token CETT of a few neurons.

    The loop (left padding, positions, cache, trimming of finished rows, per-row generators) is the
    backend's own, step for step, so at α = 1 the text is the plain backend's text.
    """

    def __init__(self, model: Any, tokenizer: Any, layout: Any, batch_size: int) -> None:
        super().__init__(model, tokenizer, batch_size=batch_size)
        self.layout = layout

    def run(self, prompts: list[list[int]], seeds: list[int], params: SamplingParams, neurons: np.ndarray) -> list[_Decoded]:
        device = next(self.model.parameters()).device
        rows = len(prompts)
        input_ids, attention, positions = self._left_padded(prompts, device)
        generators = self._generators(seeds, device)
        cache = self._new_cache()
        order = list(range(rows))
        live = [True] * rows
        tokens: list[list[int]] = [[] for _ in range(rows)]
        reasons = ["length"] * rows
        eos = torch.tensor(sorted(self.eos_ids), device=device)
        last_pos = positions[:, -1]
        calls: list[list[int]] = []  # per decode call: the row at each batch position
        k = len(neurons)
        with ExitStack() as stack:
            records = stack.enter_context(record_cett(self.layout, neurons)) if k else []
            logits = self._forward(input_ids, attention, positions, cache)
            hit_limit = False
            for step in range(params.max_new_tokens):
                nxt = self._next_tokens(logits, params, [generators[r] for r in order])
                self._consume(nxt, eos, params, order, live, tokens, reasons)
                if not any(live):
                    break
                if step == params.max_new_tokens - 1:
                    hit_limit = True
                    break
                if self.trim_finished and not all(live):
                    attention, last_pos, nxt, order, live = self._drop_finished(
                        cache, live, order, attention, last_pos, nxt)
                attention = torch.cat([attention, attention.new_ones((len(attention), 1))], dim=1)
                last_pos = last_pos + 1
                logits = self._forward(nxt[:, None], attention, last_pos[:, None], cache)
                calls.append(list(order))
            if k and hit_limit:
                # rows cut by the length limit never fed their last token: feed it once more
                attention = torch.cat([attention, attention.new_ones((len(attention), 1))], dim=1)
                self._forward(nxt[:, None], attention, (last_pos + 1)[:, None], cache)
                calls.append(list(order))
        gens = [self._finish(tokens[r], params, reasons[r]) for r in range(rows)]
        decoded_rows = torch.cat([rec[:, -1] for rec in records[1:]]).cpu().numpy() if k and calls else None
        where: dict[tuple[int, int], int] = {}
        at = 0
        for c, ordr in enumerate(calls):
            for b, r in enumerate(ordr):
                where[(r, c)] = at + b
            at += len(ordr)
        out = []
        for r, gen in enumerate(gens):
            cett = np.full((len(gen.token_ids), k), np.nan, dtype=np.float32)
            for t in range(len(gen.token_ids)):
                idx = where.get((r, t))
                if idx is not None and decoded_rows is not None:
                    cett[t] = decoded_rows[idx]
            out.append(_Decoded(gen, cett, len(prompts[r])))
        return out


def _response_span(state: ScoringState, question: str, ids: Sequence[int]) -> tuple[int, int] | None:
    """Generated tokens ``[start, end)`` of the answer, chosen by the run's locator as :func:`score` does.

    The locator works on characters; each generated token's characters come from decoding growing
    prefixes (:func:`hneurons.text.locator.token_char_offsets`), special tokens decode to nothing.
    """
    text, offsets = token_char_offsets(state.loaded.tokenizer, ids)
    lead = len(text) - len(text.lstrip())
    got = answer_chars(question, text.strip(), state.use_span_method, state.span_llm)
    if got is None:
        return None
    cs, ce = got[0] + lead, got[1] + lead
    hits = [i for i, (a, b) in enumerate(offsets) if a < b and a < ce and b > cs]
    return (hits[0], hits[-1] + 1) if hits else None


def guarded_generate(
    run_dir_or_state: str | Path | ScoringState,
    questions: Sequence[str],
    *,
    alpha: float = 1.0,
    abstain_above: float | None = None,
    max_new_tokens: int | None = None,
    temperature: float = 0.0,
    seeds: Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 16,
    on_long: str = "truncate",
    model: Any = None,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Answer questions with the H-Neurons scaled by ``alpha`` and score each answer on the fly.

    The probe's non-zero neurons are recorded during the same decoding loop (no second forward);
    the span is the run's label-blind answer span (as in training), positions counted in the
    sequence the model saw. With ``abstain_above``, an answer whose ``p_hallucination`` exceeds it
    is replaced by :data:`ABSTAIN_TEXT` (``abstained: true``; the model's text stays in ``response``).
    Row seeds default to ``(seed, question index)`` as in :class:`HFBackend`; pass ``seeds`` to fix
    each row's stream independently of the batch (the server does).
    """
    state = _state(run_dir_or_state, model, force)
    check_guard(alpha, abstain_above)  # the CLI and server check the same before loading a model
    if seeds is not None and len(seeds) != len(questions):
        raise ConfigError(f"seeds has {len(seeds)} entries for {len(questions)} questions")
    for i, q in enumerate(questions):
        if not isinstance(q, str) or not q.strip():
            raise DataError(f"question {i} is empty; every question needs text")
    params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens or state.max_new_tokens, stop=state.stop)
    loaded = state.loaded
    tok = loaded.tokenizer
    decoder = _RecordingDecoder(loaded.model, tok, loaded.layout, batch_size)
    limit = state.max_context
    encoded = []
    for i, q in enumerate(questions):
        ids = decoder._encode(state.prompt(q))
        budget = None if limit is None else limit - params.max_new_tokens
        if budget is not None and budget < 1:
            raise ConfigError(f"max_new_tokens={params.max_new_tokens} leaves no room for a prompt in the model's context ({limit})")
        cut = _max_context_check(len(ids), len(ids), budget, on_long, f"question {i}")
        encoded.append(ids[cut:])
    row_seeds = list(seeds) if seeds is not None else [_row_seed(seed, i, 0) for i in range(len(questions))]
    decoded: list[_Decoded | None] = [None] * len(questions)
    order = sorted(range(len(questions)), key=lambda i: -len(encoded[i]))
    with ExitStack() as stack, torch.inference_mode():
        if float(alpha) != 1.0:
            stack.enter_context(scale_neurons(loaded.layout, state.h_neurons, alpha))
        for b in range(0, len(order), batch_size):
            batch = order[b:b + batch_size]
            got = decoder.run([encoded[i] for i in batch], [row_seeds[i] for i in batch], params, state.record)
            for i, d in zip(batch, got):
                decoded[i] = d
    results: list[dict[str, Any]] = []
    x_rows, scored = [], []
    for i, d in enumerate(decoded):
        assert d is not None
        gen = d.generation
        out: dict[str, Any] = {"question": questions[i], "answer": gen.text, "response": gen.text,
                               "p_hallucination": None, "abstained": False, "alpha": float(alpha),
                               "finish_reason": gen.finish_reason, "prompt_tokens": d.prompt_len,
                               "completion_tokens": len(gen.token_ids), "span": None, "span_status": "ok",
                               "top_neurons": []}
        results.append(out)
        span = _response_span(state, questions[i], gen.token_ids)
        if span is None:
            out["span_status"] = "empty response" if not gen.token_ids else "response has only whitespace/punctuation tokens"
            continue
        s, e = span
        vals = d.cett[s:e].astype(np.float64)
        if not np.isfinite(vals).all():  # cannot happen: every answer token is fed once
            raise StageError("internal error: an answer token's activations were not recorded")
        out["span"] = {"start": d.prompt_len + s, "end": d.prompt_len + e,
                       "text": tok.decode(list(gen.token_ids[s:e]), skip_special_tokens=True).strip()}
        x_rows.append(vals.mean(axis=0) if vals.shape[1] else np.zeros(0))
        scored.append(i)
    if scored:
        p, tops = _apply_probe(state, np.stack(x_rows).reshape(len(scored), len(state.record)))
        for row, i in enumerate(scored):
            results[i]["p_hallucination"] = float(p[row])
            results[i]["top_neurons"] = tops[row]
            if abstain_above is not None and p[row] > abstain_above:
                results[i]["answer"] = ABSTAIN_TEXT
                results[i]["abstained"] = True
    return results

