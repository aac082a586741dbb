"""The label-blind locator's quality goals on the embedded model's own answers (docs/SPANS.md).

Greedy answers (≤ 32 new tokens, the screen's setting) of the embedded model to the first
``--questions`` TriviaQA dev questions with the paper's prompt, judged by the rule judge (refusals
dropped), then located with ``spans.method`` (default ``phrase``) exactly as the responses stage
does, and measured by :func:`hneurons.text.locator.span_quality`: alias recall on faithful answers
(goal ≥ 90%) and mean span tokens hallucinated / faithful (goal ≤ 1.5), plus agreement with GPT-4o's
answer tokens on the packaged dev set.

    python benchmarks/spans.py --questions 2000 --responses /tmp/smol.jsonl --json   # ~25 min on 2 cores

``--responses FILE`` caches the generated answers (JSON lines: id, question, answers, response): a
second run with the same file only re-locates, so a locator change is measured in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hneurons.config import PAPER_SUFFIX  # noqa: E402
from hneurons.core.models import load_model  # noqa: E402
from hneurons.judges.rules import is_refusal, match_alias  # noqa: E402
from hneurons.text.locator import locate_answer_span, span_quality  # noqa: E402
from hneurons.text.prompts import render_prompt, user_text  # noqa: E402
from hneurons.text.spans import build_sequence  # noqa: E402


def generate(loaded, n: int, batch_size: int) -> list[dict]:
    """Greedy answers to the first ``n`` TriviaQA dev questions."""
    from hneurons.core.generation import HFBackend, SamplingParams
    from hneurons.data import load_dataset

    records = load_dataset("triviaqa_dev")[:n]
    prompts = [render_prompt(loaded.tokenizer, user_text(r.question, PAPER_SUFFIX)) for r in records]
    backend = HFBackend(loaded.model, loaded.tokenizer, batch_size=batch_size, share_prefix=True)
    gens = backend.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=32), progress=False)
    return [{"id": r.id, "question": r.question, "answers": list(r.answers), "response": g[0].text}
            for r, g in zip(records, gens)]


def located_rows(tokenizer, answers: list[dict], method: str) -> list[dict]:
    """The responses stage's labelled rows (label, span, matched alias) for :func:`span_quality`."""
    rows = []
    for a in answers:
        resp = a["response"].strip()
        if not resp or is_refusal(resp):
            continue
        alias = match_alias(resp, a["answers"], a["question"])
        seq = build_sequence(tokenizer, user_text(a["question"], PAPER_SUFFIX), resp)
        span = locate_answer_span(seq, a["question"], method)
        ok = hasattr(span, "start")
        rows.append({"label": 0 if alias else 1, "span_status": "ok" if ok else span.reason,
                     "span_start": span.start if ok else -1, "span_end": span.end if ok else -1,
                     "span_text": span.text if ok else "", "matched_alias": alias or "",
                     "response_start": seq.prompt_end, "response_end": seq.response_end})
    return rows


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--method", default="phrase", choices=["phrase", "response"])
    ap.add_argument("--responses", type=Path, help="cache of generated answers (read if it exists, else written)")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args()
    loaded = load_model(None, dtype="float32", device="cpu")
    if args.responses and args.responses.is_file():
        answers = [json.loads(line) for line in args.responses.read_text(encoding="utf-8").splitlines() if line]
    else:
        answers = generate(loaded, args.questions, args.batch_size)
        if args.responses:
            args.responses.write_text("".join(json.dumps(a) + "\n" for a in answers), encoding="utf-8")
    result = span_quality(located_rows(loaded.tokenizer, answers, args.method), args.method)
    result["answers"] = len(answers)
    print(f"{len(answers)} answers; alias recall {result['alias_recall']} (n {result['alias_recall_n']}, goal >= 0.9); "
          f"span tokens hallucinated/faithful {result['length_ratio']} (goal <= 1.5); GPT-4o exact "
          f"{(result.get('gpt4o') or {}).get('exact')}")
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
