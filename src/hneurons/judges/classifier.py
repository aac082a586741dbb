"""A small linear text classifier whose weights ship as plain JSON (no pickle, no scikit-learn).

``benchmarks/judges.py`` trains scikit-learn's TfidfVectorizer + LogisticRegression on the judge
validation files and writes the weights under ``hneurons/judges/data/``; this module applies them
with NumPy only, so no scikit-learn version has to match at run time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from hneurons.errors import ConfigError

JUDGE_DATA = Path(__file__).resolve().parent / "data"
"""Trained judge weights and the judge card (package data)."""


class TextClassifier:
    """A linear classifier over counted tokens: sublinear tf-idf words plus 0/1 indicators.

    Word tokens get (1 + log count) · idf, L2-normalised; tokens starting with ``__`` are
    indicators (present = 1) kept out of that normalisation, so a cue weighs the same in a short
    reply and a long one. The score is the dot product with the coefficients plus the intercept.
    The weights are plain JSON written by ``benchmarks/judges.py`` from scikit-learn's
    TfidfVectorizer + LogisticRegression, and applied here with NumPy only: no pickle and no
    scikit-learn version match needed.
    """

    def __init__(self, vocabulary: Sequence[str], idf: Sequence[float], coef: Sequence[float],
                 indicators: Sequence[str], indicator_coef: Sequence[float], intercept: float) -> None:
        if not (len(vocabulary) == len(idf) == len(coef)) or len(indicators) != len(indicator_coef):
            raise ValueError("vocabulary/idf/coef and indicators/indicator_coef must have matching lengths")
        self.index = {tok: i for i, tok in enumerate(vocabulary)}
        self.idf = np.asarray(idf, dtype=np.float64)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.indicator_coef = dict(zip(indicators, map(float, indicator_coef)))
        self.intercept = float(intercept)

    @classmethod
    def load(cls, path: Path) -> TextClassifier:
        """Read the weights JSON (ConfigError naming the file when it is missing or malformed)."""
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(d["vocabulary"], d["idf"], d["coef"], d["indicators"], d["indicator_coef"], d["intercept"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"judge weights {path} are missing or malformed ({e}); "
                              "rebuild them with benchmarks/judges.py or reinstall hneurons") from None

    def decision(self, tokens: Sequence[str]) -> float:
        """The logistic score (> 0 = class 1)."""
        counts: dict[int, int] = {}
        score = self.intercept + sum(self.indicator_coef.get(t, 0.0) for t in set(tokens) if t.startswith("__"))
        for tok in tokens:
            i = self.index.get(tok)
            if i is not None and not tok.startswith("__"):
                counts[i] = counts.get(i, 0) + 1
        if counts:
            idx = np.fromiter(counts, dtype=np.int64)
            vals = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64))) * self.idf[idx]
            score += float(vals @ self.coef[idx] / np.linalg.norm(vals))
        return score


@lru_cache(maxsize=None)
def load_classifier(name: str) -> TextClassifier:
    """The packaged classifier ``hneurons/judges/data/NAME.json`` (read once per process)."""
    return TextClassifier.load(JUDGE_DATA / f"{name}.json")
