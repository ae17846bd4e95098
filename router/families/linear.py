"""Per-model logistic regressions on three kinds of features: the embedding (lr), TF-IDF of the text (tfidf,
no embedding needed), and hand-made difficulty features (hand)."""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from router.families.base import Family, TrainingData, adequate_labels, arr, fit_logistic, rounded, sigmoid


class _PerModelLogistic(Family):
    """Shared by the three: `_features` turns (x, texts) into a matrix; one LR per model on it."""

    def fit(self, data: TrainingData) -> "Family":
        feats = self._fit_features(data)
        labels = adequate_labels(data.adequate)
        fitted = [fit_logistic(feats, labels[:, j], self.params.get("c", 1.0)) for j in range(labels.shape[1])]
        self.coef = np.vstack([c for c, _ in fitted])
        self.intercept = arr([i for _, i in fitted])
        return self

    def predict(self, x: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        feats = self._features(x, texts)
        return sigmoid(np.asarray(feats @ self.coef.T) + self.intercept)

    def _fit_features(self, data: TrainingData):
        return self._features(data.x, data.texts)

    def _features(self, x: np.ndarray, texts: Sequence[str]):
        return x

    def state(self) -> dict:
        return {"coef": rounded(self.coef), "intercept": rounded(self.intercept)}

    @classmethod
    def from_state(cls, params: dict, state: dict) -> "Family":
        family = cls(**params)
        family.coef, family.intercept = arr(state["coef"]), arr(state["intercept"])
        return family


class Logistic(_PerModelLogistic):
    name = "lr"
    grid = [{"c": 0.3}, {"c": 1.0}, {"c": 3.0}]


class Tfidf(_PerModelLogistic):
    name = "tfidf"
    reads_embedding, reads_text = False, True
    grid = [{"c": 1.0}, {"c": 3.0}, {"c": 10.0}]

    def _fit_features(self, data: TrainingData):
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit(list(data.texts))
        self.vocabulary = {term: int(i) for term, i in vec.vocabulary_.items()}
        self.idf = vec.idf_.astype(np.float32)
        self._vectorizer = vec
        return vec.transform(list(data.texts))

    def _features(self, x: np.ndarray, texts: Sequence[str]):
        return self.vectorizer.transform(list(texts))

    @property
    def vectorizer(self):
        if getattr(self, "_vectorizer", None) is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, vocabulary=self.vocabulary)
            vec.idf_ = self.idf  # rebuilt from arrays, not unpickled
            self._vectorizer = vec
        return self._vectorizer

    def state(self) -> dict:
        return {**super().state(), "vocabulary": self.vocabulary, "idf": rounded(self.idf)}

    @classmethod
    def from_state(cls, params: dict, state: dict) -> "Family":
        family = super().from_state(params, state)
        family.vocabulary = {str(k): int(v) for k, v in state["vocabulary"].items()}
        family.idf = arr(state["idf"])
        return family


def hand_features(texts: Sequence[str]) -> np.ndarray:
    """Lexical difficulty cues: lengths, digits, operators, negated stems, option spread, statement pairs, lines."""
    rows = []
    for p in texts:
        lines = p.split("\n")
        options = [line for line in lines if re.match(r"^[A-D]\. ", line)]
        lengths = [len(o) for o in options] or [0]
        rows.append([np.log1p(len(p)), len(re.findall(r"\d+(?:\.\d+)?", p)) ** 0.5, np.log1p(np.mean(lengths)),
                     np.std(lengths) / (np.mean(lengths) + 1), bool(re.search(r"\b(NOT|EXCEPT|LEAST)\b", p)),
                     "Statement 1" in p, "Scenario 1" in p, p.count("?"), len(re.findall(r"[=+\-*/^%$]", p)) ** 0.5,
                     len(lines)])
    return np.asarray(rows, dtype=np.float32)


class HandFeatures(_PerModelLogistic):
    name = "hand"
    reads_embedding, reads_text = False, True
    grid = [{"c": 1.0}]

    def _fit_features(self, data: TrainingData):
        raw = hand_features(data.texts)
        self.mean, self.scale = raw.mean(axis=0), raw.std(axis=0) + 1e-6
        return (raw - self.mean) / self.scale

    def _features(self, x: np.ndarray, texts: Sequence[str]):
        return (hand_features(texts) - self.mean) / self.scale

    def state(self) -> dict:
        return {**super().state(), "mean": rounded(self.mean), "scale": rounded(self.scale)}

    @classmethod
    def from_state(cls, params: dict, state: dict) -> "Family":
        family = super().from_state(params, state)
        family.mean, family.scale = arr(state["mean"]), arr(state["scale"])
        return family
