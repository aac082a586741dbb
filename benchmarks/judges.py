"""Rebuild the FalseQA judge weights and the judge card from the judge-validation dev files.

Usage::

    python benchmarks/judges.py [--data DIR] [--out src/hneurons/data/files/judge_validation]

``--data`` (default: the packaged copy) is the folder holding ``triviaqa_official_dev.jsonl.gz`` and
``falseqa_gpt4o_dev.jsonl.gz`` (GPT-4o verdicts, see its SOURCE.md). Writes into ``--out``:

* ``falseqa_classifier.json`` — the FalseQA text classifier over
  :func:`hneurons.judges.rules.falseqa_features`: sublinear tf-idf of the words found in at least 20
  responses (so topic words of single questions drop out) plus 0/1 cue indicators, L2 logistic
  regression with C = 10, trained on every dev row; plain JSON read by
  :class:`hneurons.judges.rules.TextClassifier`.
* ``judge_card.json`` — per task the judge's agreement with the reference verdicts, n and the 95%
  Wilson interval: TriviaQA alias matcher measured directly (it is not trained; also its
  false-"correct" rate), FalseQA classifier by 5-fold cross-validation grouped by ``question_id``
  (one question's responses never in both train and test fold). Before/after baselines are
  recorded next to it. Jailbreak and MC have no labelled set here; their card entries say so.

Deterministic: the folds and liblinear fits have no randomness, so a re-run writes the same files.
The last line of output is the card as one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from hneurons.judges.rules import (
    _PREMISE_CUES,
    FALSEQA_OPENING_CHARS,
    TextClassifier,
    falseqa_features,
    normalize_answer,
    rule_judge,
)
from hneurons.stats import proportion_ci

C = 10.0
MIN_DF = 20
FOLDS = 5


def _rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entry(agree: int, n: int, **extra: object) -> dict:
    p, lo, hi = proportion_ci(agree, n)
    return {"n": n, "agree": agree, "agreement": round(p, 4), "ci95": [round(lo, 4), round(hi, 4)], **extra}


def _identity(tokens: list[str]) -> list[str]:
    return tokens


class _Model:
    """Words (tf-idf) and indicators (``__`` tokens, 0/1) side by side, as TextClassifier applies them."""

    def __init__(self, docs: list[list[str]], y: np.ndarray) -> None:
        self.indicators = sorted({t for d in docs for t in d if t.startswith("__")})
        self.vec = TfidfVectorizer(analyzer=_identity, sublinear_tf=True, min_df=MIN_DF)
        self.vec.fit([self._words(d) for d in docs])
        self.clf = LogisticRegression(C=C, max_iter=5000).fit(self._x(docs), y)

    @staticmethod
    def _words(doc: list[str]) -> list[str]:
        return [t for t in doc if not t.startswith("__")]

    def _x(self, docs: list[list[str]]) -> sp.csr_matrix:
        ind = np.array([[t in set(d) for t in self.indicators] for d in docs], dtype=float)
        return sp.hstack([self.vec.transform([self._words(d) for d in docs]), ind]).tocsr()

    def predict(self, docs: list[list[str]]) -> np.ndarray:
        return self.clf.predict(self._x(docs))


def measure_triviaqa(path: Path) -> dict:
    """Alias matcher vs GPT-4o, and the paper's plain substring rule as the baseline."""
    rows = _rows(path)
    ref = [r["label"] == "correct" for r in rows]
    ours = [rule_judge(r["response"], r["answers"], r["question"]) for r in rows]
    paper = [any(normalize_answer(a) and normalize_answer(a) in normalize_answer(r["response"]) for a in r["answers"])
             for r in rows]
    n_wrong = sum(not x for x in ref)
    false_correct = sum(o and not x for o, x in zip(ours, ref))
    return _entry(sum(o == x for o, x in zip(ours, ref)), len(rows),
                  judge="hneurons.judges.rules.match_alias", method="direct (the matcher is not trained)",
                  validation=f"{path.name} (GPT-4o labels)", sha256=_sha256(path),
                  false_correct=false_correct, reference_wrong=n_wrong,
                  false_correct_rate=round(false_correct / max(1, n_wrong), 4),
                  baseline={"judge": "paper rule (normalised alias substring)",
                            "agree": sum(o == x for o, x in zip(paper, ref))})


def _cue_rule_refused(response: str) -> bool:
    """The earlier release's FalseQA rule (kept here only to measure the change against it)."""
    opening = re.sub(r"[*_#>`]", "", response)[:150].replace("’", "'")
    return re.search(_PREMISE_CUES["rule"].pattern, opening, re.IGNORECASE) is not None


def train_falseqa(path: Path, out: Path) -> dict:
    """Grouped CV agreement, then the final fit on every row, written as JSON weights."""
    rows = _rows(path)
    docs = [falseqa_features(r["question"], r["response"]) for r in rows]
    y = np.array([int(r["label"] == "ACCEPTED") for r in rows])
    groups = np.array([r["question_id"] for r in rows])
    pred = np.zeros(len(rows), dtype=int)
    for tr, te in GroupKFold(FOLDS).split(docs, y, groups):
        pred[te] = _Model([docs[i] for i in tr], y[tr]).predict([docs[i] for i in te])
    model = _Model(docs, y)
    vec, clf = model.vec, model.clf
    vocab = sorted(vec.vocabulary_, key=vec.vocabulary_.get)
    n_words = len(vocab)
    weights = {"model": "sublinear tf-idf words + 0/1 indicators, L2 logistic regression, over hneurons.judges.rules.falseqa_features",
               "positive_class": "ACCEPTED", "C": C, "min_df": MIN_DF,
               "opening_chars": FALSEQA_OPENING_CHARS, "trained_on": {"file": path.name, "sha256": _sha256(path),
                                                                      "n": len(rows)},
               "vocabulary": vocab, "idf": [round(float(v), 8) for v in vec.idf_],
               "coef": [round(float(v), 8) for v in clf.coef_[0][:n_words]],
               "indicators": model.indicators,
               "indicator_coef": [round(float(v), 8) for v in clf.coef_[0][n_words:]],
               "intercept": round(float(clf.intercept_[0]), 8)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "falseqa_classifier.json").write_text(json.dumps(weights, ensure_ascii=False) + "\n", encoding="utf-8")
    # The NumPy re-implementation must reproduce scikit-learn's predictions on every row.
    shipped = TextClassifier(vocab, weights["idf"], weights["coef"], weights["indicators"],
                             weights["indicator_coef"], weights["intercept"])
    ours = np.array([int(shipped.decision(d) > 0) for d in docs])
    mismatch = int((ours != model.predict(docs)).sum())
    if mismatch:
        sys.exit(f"shipped FalseQA weights disagree with scikit-learn on {mismatch} rows")
    majority = max(int(y.sum()), len(y) - int(y.sum()))
    return _entry(int((pred == y).sum()), len(rows),
                  judge="hneurons.judges.rules.judge_false_premise_rule (text classifier)",
                  method=f"{FOLDS}-fold cross-validation grouped by question_id",
                  validation=f"{path.name} (GPT-4o ACCEPTED/REFUSED)", sha256=_sha256(path),
                  train_agreement=round(float((ours == y).mean()), 4),
                  baseline={"judge": "always ACCEPTED", "agree": majority},
                  baseline_cue_rule={"judge": "earlier release: a correction cue in the first 150 characters",
                                     "agree": int(sum((_cue_rule_refused(r["response"]) == (yy == 0))
                                                      for r, yy in zip(rows, y)))})


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    packaged = Path(__file__).resolve().parents[1] / "src/hneurons/data/files/judge_validation"
    ap.add_argument("--data", type=Path, default=packaged,
                    help="folder with the judge-validation dev files (default: the packaged copy)")
    ap.add_argument("--out", type=Path, default=packaged)
    ap.add_argument("--json", action="store_true", help="accepted for `make bench`; the last line is always JSON")
    args = ap.parse_args(argv)
    tq, fq = args.data / "triviaqa_official_dev.jsonl.gz", args.data / "falseqa_gpt4o_dev.jsonl.gz"
    for p in (tq, fq):
        if not p.is_file():
            sys.exit(f"{p} not found; pass --data the judge_validation folder")
    card = {
        "built_by": "benchmarks/judges.py",
        "judges": {
            "triviaqa": measure_triviaqa(tq),
            "falseqa": train_falseqa(fq, args.out),
            "jailbreak": {"judge": "hneurons.judges.rules.judge_harmful_rule", "n": 0,
                          "note": "no labelled jailbreak set here; checked on hand-made examples only"},
            "mc": {"judge": "hneurons.judges.rules.parse_choice", "n": 0,
                   "note": "no labelled set here; a tester's check (issue 16) found 25/25 right"},
        },
    }
    (args.out / "judge_card.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(card))
    return card


if __name__ == "__main__":
    main()
