"""The adequacy classifier: for each model, P(the model answers this request adequately), plus the request's task.

Trained with scikit-learn (one logistic regression per model, one multinomial one for the task) and saved as
plain arrays in JSON, so loading it unpickles nothing. Prediction is a few numpy dot products.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ARTIFACT_FORMAT = "ensemble-router/adequacy-lr/v1"


def feature_matrix(embeddings: np.ndarray, token_counts) -> np.ndarray:
    """Embedding plus a scaled log length: long prompts are harder for small models."""
    lengths = np.log1p(np.asarray(token_counts, dtype=np.float32))[:, None] / 6.0
    return np.hstack([embeddings.astype(np.float32), lengths]).astype(np.float32)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class Prediction:
    scores: dict[str, float]
    task: str
    task_probabilities: dict[str, float]


@dataclass
class AdequacyClassifier:
    models: list[str]
    coef: np.ndarray          # (n_models, n_features)
    intercept: np.ndarray     # (n_models,)
    tasks: list[str]
    task_coef: np.ndarray     # (n_tasks, n_features)
    task_intercept: np.ndarray
    metadata: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, features: np.ndarray, adequate: np.ndarray, models: list[str], tasks: list[str] | None = None,
            c: float = 1.0, metadata: dict | None = None) -> "AdequacyClassifier":
        from sklearn.linear_model import LogisticRegression

        n_features = features.shape[1]
        coef = np.zeros((len(models), n_features), dtype=np.float32)
        intercept = np.zeros(len(models), dtype=np.float32)
        for j in range(len(models)):
            y = adequate[:, j] >= 0.5
            if y.all() or not y.any():  # one class only: predict its smoothed rate
                p = (y.sum() + 1) / (len(y) + 2)
                intercept[j] = np.log(p / (1 - p))
                continue
            lr = LogisticRegression(C=c, max_iter=2000).fit(features, y)  # unweighted: keeps P calibrated
            coef[j], intercept[j] = lr.coef_[0], lr.intercept_[0]
        task_names = sorted(set(tasks)) if tasks is not None else ["chat"]
        task_coef = np.zeros((len(task_names), n_features), dtype=np.float32)
        task_intercept = np.zeros(len(task_names), dtype=np.float32)
        if len(task_names) > 1:
            lr = LogisticRegression(C=c * 10, max_iter=2000).fit(features, tasks)
            order = [list(lr.classes_).index(t) for t in task_names]
            task_coef, task_intercept = lr.coef_[order], lr.intercept_[order]
            if len(task_names) == 2:  # sklearn's binary form has one row; expand to two logits
                task_coef = np.vstack([-lr.coef_[0] / 2, lr.coef_[0] / 2])
                task_intercept = np.array([-lr.intercept_[0] / 2, lr.intercept_[0] / 2])
        return cls(list(models), coef, intercept, task_names, np.asarray(task_coef, np.float32),
                   np.asarray(task_intercept, np.float32), dict(metadata or {}))

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """(n, n_models) probabilities of adequacy."""
        return _sigmoid(features @ self.coef.T + self.intercept)

    def predict_tasks(self, features: np.ndarray) -> np.ndarray:
        logits = features @ self.task_coef.T + self.task_intercept
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def predict_one(self, feature_row: np.ndarray) -> Prediction:
        x = feature_row[None, :]
        p = self.predict_proba(x)[0]
        t = self.predict_tasks(x)[0]
        return Prediction({m: float(v) for m, v in zip(self.models, p)}, self.tasks[int(t.argmax())],
                          {k: float(v) for k, v in zip(self.tasks, t)})

    def to_json(self) -> dict:
        return {"format": ARTIFACT_FORMAT, "models": self.models, "coef": self.coef.tolist(),
                "intercept": self.intercept.tolist(), "tasks": self.tasks, "task_coef": self.task_coef.tolist(),
                "task_intercept": self.task_intercept.tolist(), "metadata": self.metadata}

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "AdequacyClassifier":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read router artifact: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"{path}: not a router artifact (format must be {ARTIFACT_FORMAT!r})")
        try:
            clf = cls(data["models"], np.asarray(data["coef"], np.float32), np.asarray(data["intercept"], np.float32),
                      data["tasks"], np.asarray(data["task_coef"], np.float32),
                      np.asarray(data["task_intercept"], np.float32), data.get("metadata", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: malformed router artifact: {exc}") from None
        n = clf.coef.shape[1] if clf.coef.ndim == 2 else -1
        if clf.coef.shape != (len(clf.models), n) or clf.task_coef.shape != (len(clf.tasks), n):
            raise ValueError(f"{path}: malformed router artifact: array shapes do not match models/tasks")
        return clf


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
