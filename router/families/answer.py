"""Answer length as a difficulty signal (privileged information, Vapnik & Vashist 2009): a ridge regression
learns, from hand features and the embedding, how long the costliest model's answer to a prompt runs, a dense
training-only target where adequacy is binary; a long worked answer means many steps, where small models slip.
Each model's P(adequate) is a logistic fit on the predicted length. Serving needs only the prompt. Without
answers in the table (RouteLLM's MMLU has none) the prediction is a constant: each model's base rate."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from router.families.base import Family, TrainingData, adequate_labels, arr, fit_logistic, rounded, sigmoid
from router.families.linear import hand_features

MIN_ANSWERS = 10  # fewer known answer lengths than this: no opinion


class AnswerLength(Family):
    name = "length"
    reads_text = True  # hand features of the prompt beside the embedding
    grid = [{"alpha": 10.0}]

    def fit(self, data: TrainingData) -> "Family":
        from sklearn.linear_model import Ridge

        raw = hand_features(data.texts)
        self.mean, self.scale = arr(rounded(raw.mean(axis=0))), arr(rounded(raw.std(axis=0) + 1e-6))  # as stored
        feats = self._features(data.x, data.texts)
        lengths = np.full(len(data.texts), np.nan) if data.answer_lengths is None else np.asarray(data.answer_lengths)
        known = np.isfinite(lengths)
        self.coef, self.intercept = np.zeros(feats.shape[1], np.float32), 0.0
        if known.sum() >= MIN_ANSWERS:
            ridge = Ridge(alpha=self.params.get("alpha", 10.0)).fit(feats[known], lengths[known])
            self.coef, self.intercept = arr(rounded(ridge.coef_)), float(ridge.intercept_)
        predicted = feats @ self.coef + self.intercept
        self.centre, self.spread = float(predicted.mean()), float(predicted.std() + 1e-6)
        labels = adequate_labels(data.adequate)
        standard = self._standard(predicted)[:, None]
        fitted = [fit_logistic(standard, labels[:, j], 1.0) for j in range(labels.shape[1])]
        self.platt = arr(rounded(np.array([[c[0], i] for c, i in fitted])))
        return self

    def _features(self, x: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        return np.hstack([(hand_features(texts) - self.mean) / self.scale, x])

    def _standard(self, predicted: np.ndarray) -> np.ndarray:
        return (predicted - self.centre) / self.spread

    def predict(self, x: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        standard = self._standard(self._features(x, texts) @ self.coef + self.intercept)
        return sigmoid(standard[:, None] * self.platt[:, 0] + self.platt[:, 1])

    def state(self) -> dict:
        return {"mean": rounded(self.mean), "scale": rounded(self.scale), "coef": rounded(self.coef),
                "intercept": self.intercept, "centre": self.centre, "spread": self.spread,
                "platt": rounded(self.platt)}

    @classmethod
    def from_state(cls, params: dict, state: dict) -> "Family":
        family = cls(**params)
        family.mean, family.scale, family.coef = arr(state["mean"]), arr(state["scale"]), arr(state["coef"])
        family.intercept, family.centre, family.spread = (float(state[k]) for k in ("intercept", "centre", "spread"))
        family.platt = arr(state["platt"])
        return family
