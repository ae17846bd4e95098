"""kNN in embedding space: a model's P(adequate) is the smoothed share of the k most similar training prompts
(cosine over unit embeddings) it answered adequately."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from router.families.base import Family, TrainingData, adequate_labels, arr, rounded

KEY_DIGITS = 4
PRIOR_WEIGHT = 2.0  # pseudo-neighbours at the overall rate: a few neighbours cannot say 0 or 1


def top_k_similar(queries: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosine similarities) of each query's k most similar keys; rows are unit vectors."""
    sims = queries @ keys.T
    k = max(1, min(k, keys.shape[0]))
    idx = np.argpartition(-sims, kth=k - 1, axis=1)[:, :k]
    return idx, np.take_along_axis(sims, idx, axis=1)


class Knn(Family):
    name = "knn"
    grid = [{"k": 16}, {"k": 32}, {"k": 64}]

    def fit(self, data: TrainingData) -> "Family":
        self.keys = np.round(data.x[:, :-1], KEY_DIGITS).astype(np.float32)  # as stored: a round trip scores the same
        self.labels = adequate_labels(data.adequate).astype(np.float32)
        self.prior = self.labels.mean(axis=0)
        return self

    def predict(self, x: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        idx, _ = top_k_similar(x[:, :-1].astype(np.float32), self.keys, self.params.get("k", 32))
        hits = self.labels[idx].sum(axis=1)
        return (hits + PRIOR_WEIGHT * self.prior) / (idx.shape[1] + PRIOR_WEIGHT)

    def state(self) -> dict:
        return {"keys": rounded(self.keys, KEY_DIGITS), "labels": self.labels.astype(int).tolist()}

    @classmethod
    def from_state(cls, params: dict, state: dict) -> "Family":
        family = cls(**params)
        family.keys, family.labels = arr(state["keys"]), arr(state["labels"])
        family.prior = family.labels.mean(axis=0)
        return family
