"""The router artifact: a router family that gives each model P(adequate), a task classifier, and what the
out-of-distribution check needs (the training prompts' embeddings and a distance threshold).

Saved as plain arrays in JSON, so loading it unpickles nothing. Prediction is a few numpy products.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from router.families import Family, TrainingData, family_from_json
from router.families.base import rounded
from router.families.neighbours import KEY_DIGITS

ARTIFACT_FORMAT = "ensemble-router/router/v2"
OLDER_FORMATS = {"ensemble-router/adequacy-lr/v1"}
OOD_QUANTILE = 0.97  # the threshold: this quantile of the training prompts' leave-one-out neighbour distances
_CHUNK = 1024


def feature_matrix(embeddings: np.ndarray, token_counts) -> np.ndarray:
    """Embedding plus a scaled log length: long prompts are harder for small models."""
    lengths = np.log1p(np.asarray(token_counts, dtype=np.float32))[:, None] / 6.0
    return np.hstack([embeddings.astype(np.float32), lengths]).astype(np.float32)


def nearest_distance(queries: np.ndarray, keys: np.ndarray, leave_one_out: bool = False) -> np.ndarray:
    """1 - the cosine similarity of each query's nearest key (unit vectors); with leave_one_out the queries
    are the keys and each skips itself."""
    out = np.empty(len(queries), np.float32)
    for start in range(0, len(queries), _CHUNK):
        sims = queries[start:start + _CHUNK] @ keys.T
        if leave_one_out:
            rows = np.arange(sims.shape[0])
            sims[rows, rows + start] = -np.inf
        out[start:start + _CHUNK] = 1.0 - sims.max(axis=1)
    return out


@dataclass
class Prediction:
    scores: dict[str, float]
    task: str
    task_probabilities: dict[str, float]
    ood_distance: float | None = None
    ood_threshold: float | None = None


@dataclass
class AdequacyClassifier:
    models: list[str]
    family: Family
    tasks: list[str]
    task_coef: np.ndarray     # (n_tasks, n_features)
    task_intercept: np.ndarray
    ood_keys: np.ndarray | None = None   # (n_train, embedding dims): unit embeddings of the training prompts
    ood_threshold: float | None = None
    metadata: dict = field(default_factory=dict)
    _neighbour_distances: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def fit(cls, family: Family, features: np.ndarray, texts: Sequence[str], adequate: np.ndarray,
            models: list[str], tasks: Sequence[str] | None = None, domains: Sequence[str] | None = None,
            ood_quantile: float = OOD_QUANTILE, metadata: dict | None = None,
            ood_features: np.ndarray | None = None,
            answer_lengths: np.ndarray | None = None) -> "AdequacyClassifier":
        """`ood_features`: the prompts that define "seen before" (default: every training row). `answer_lengths`:
        a training-only target some families learn from (TrainingData.answer_lengths)."""
        from sklearn.linear_model import LogisticRegression

        domains = np.asarray(domains if domains is not None else (tasks if tasks is not None else ["all"] * len(texts)))
        family.fit(TrainingData(features, list(texts), np.asarray(adequate, float), domains.astype(str), list(models),
                                answer_lengths))
        n_features = features.shape[1]
        task_names = sorted(set(tasks)) if tasks is not None else ["chat"]
        task_coef = np.zeros((len(task_names), n_features), dtype=np.float32)
        task_intercept = np.zeros(len(task_names), dtype=np.float32)
        if len(task_names) > 1:
            lr = LogisticRegression(C=10.0, max_iter=2000).fit(features, list(tasks))
            if len(task_names) == 2:  # sklearn's binary form has one row; expand to two logits
                task_coef = np.vstack([-lr.coef_[0] / 2, lr.coef_[0] / 2])
                task_intercept = np.array([-lr.intercept_[0] / 2, lr.intercept_[0] / 2])
            else:
                order = [list(lr.classes_).index(t) for t in task_names]
                task_coef, task_intercept = lr.coef_[order], lr.intercept_[order]
        seen = features if ood_features is None else ood_features
        keys = np.unique(np.round(seen[:, :-1], KEY_DIGITS).astype(np.float32), axis=0)  # as stored
        threshold = float(np.quantile(nearest_distance(keys, keys, leave_one_out=True), ood_quantile)) \
            if len(keys) > 1 else None
        return cls(list(models), family, task_names, np.asarray(task_coef, np.float32),
                   np.asarray(task_intercept, np.float32), keys, threshold,
                   {**(metadata or {}), "ood": {"quantile": ood_quantile, "threshold": threshold}})

    def predict_proba(self, features: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """(n, n_models) probabilities of adequacy."""
        return np.clip(self.family.predict(features, texts), 0.0, 1.0)

    def predict_tasks(self, features: np.ndarray) -> np.ndarray:
        logits = features @ self.task_coef.T + self.task_intercept
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def ood_distances(self, features: np.ndarray) -> np.ndarray | None:
        """Each prompt's distance to its nearest training prompt, or None when the artifact has no keys."""
        if self.ood_keys is None or self.ood_threshold is None:
            return None
        return nearest_distance(features[:, :-1].astype(np.float32), self.ood_keys)

    def ood_threshold_at(self, quantile: float | None) -> float | None:
        """The artifact's threshold, or with a policy's `ood.quantile` that quantile of the training prompts'
        leave-one-out neighbour distances (what `router train --ood-quantile` would have stored), computed once."""
        if quantile is None or self.ood_keys is None or self.ood_threshold is None or len(self.ood_keys) < 2:
            return self.ood_threshold
        if self._neighbour_distances is None:
            self._neighbour_distances = nearest_distance(self.ood_keys, self.ood_keys, leave_one_out=True)
        return float(np.quantile(self._neighbour_distances, quantile))

    def predict(self, features: np.ndarray, texts: Sequence[str]) -> list[Prediction]:
        """One Prediction per row, computed as one batch (the ingress batches concurrent decisions)."""
        probabilities, tasks = self.predict_proba(features, texts), self.predict_tasks(features)
        distances = self.ood_distances(features)
        return [Prediction({m: float(v) for m, v in zip(self.models, p)}, self.tasks[int(t.argmax())],
                           {k: float(v) for k, v in zip(self.tasks, t)},
                           None if distances is None else float(distances[i]), self.ood_threshold)
                for i, (p, t) in enumerate(zip(probabilities, tasks))]

    @property
    def encoder_name(self) -> str | None:
        """The encoder the router was trained on (`router train --encoder`); None in artifacts that predate the
        choice, which were all trained on the catalogue's encoder."""
        features = self.metadata.get("features")
        return features.get("encoder") if isinstance(features, dict) else None

    def predict_one(self, feature_row: np.ndarray, text: str) -> Prediction:
        return self.predict(feature_row[None, :], [text])[0]

    def to_json(self) -> dict:
        return {"format": ARTIFACT_FORMAT, "models": self.models, "family": self.family.to_json(),
                "tasks": self.tasks, "task_coef": rounded(self.task_coef), "task_intercept": rounded(self.task_intercept),
                "ood": None if self.ood_keys is None else {"keys": rounded(self.ood_keys, KEY_DIGITS),
                                                           "threshold": self.ood_threshold},
                "metadata": self.metadata}

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_json(), separators=(",", ":")))

    @classmethod
    def load(cls, path: str | Path) -> "AdequacyClassifier":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read router artifact: {exc}") from None
        found = data.get("format") if isinstance(data, dict) else None
        if found in OLDER_FORMATS:
            raise ValueError(f"{path}: a router artifact in an older format ({found}); this version reads "
                             f"{ARTIFACT_FORMAT}. Retrain it: router train --table TABLE --out {path}")
        if found != ARTIFACT_FORMAT:
            raise ValueError(f"{path}: not a router artifact (format must be {ARTIFACT_FORMAT!r})")
        try:
            ood = data.get("ood") or {}
            clf = cls(data["models"], family_from_json(data["family"]), data["tasks"],
                      np.asarray(data["task_coef"], np.float32), np.asarray(data["task_intercept"], np.float32),
                      np.asarray(ood["keys"], np.float32) if ood else None, ood.get("threshold"),
                      data.get("metadata", {}))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path}: malformed router artifact: {exc}") from None
        n = clf.task_coef.shape[1] if clf.task_coef.ndim == 2 else -1
        if clf.task_coef.shape != (len(clf.tasks), n) or (clf.ood_keys is not None and clf.ood_keys.shape[1] != n - 1):
            raise ValueError(f"{path}: malformed router artifact: array shapes do not match the features")
        return clf


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
