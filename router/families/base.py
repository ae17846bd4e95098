"""The contract every router family implements (as RouteLLM's routers all implement one scoring method):
fit on an outcome table's features, give each of N models a P(adequate), save and load as JSON arrays
(never a pickle), and score one prompt at serving time."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np


@dataclass
class TrainingData:
    x: np.ndarray              # (n, d) features: unit embedding + scaled log length (router.classifier)
    texts: Sequence[str]       # the prompts, for lexical families
    adequate: np.ndarray       # (n, m) each model's score in [0, 1]; >= 0.5 is adequate
    domains: np.ndarray        # (n,) a domain label per prompt (MMLU subject, eval set, task)
    models: list[str]
    # a training-only target (privileged information, never a feature): log(1 + output tokens) of the costliest
    # model's answer per prompt, NaN where unknown; None when the table has no such column
    answer_lengths: np.ndarray | None = None


class Family(abc.ABC):
    name: ClassVar[str]
    reads_embedding: ClassVar[bool] = True  # False: decides from the text alone, no embedding needed
    reads_text: ClassVar[bool] = False      # True: needs the prompt text (so not trainable on rows stored without it)
    grid: ClassVar[list[dict]] = [{}]       # the settings cross-validation tries
    in_auto: ClassVar[bool] = True          # False: tried by `--family NAME` or select_family(also=...) only
    measured_grid: ClassVar[list[dict]] = []  # settings measured and left out of auto: select_family(measured=True)

    def __init__(self, **params):
        self.params = params

    @abc.abstractmethod
    def fit(self, data: TrainingData) -> "Family": ...

    @abc.abstractmethod
    def predict(self, x: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """(n, m) P(adequate) per model, columns in the training table's model order."""

    @abc.abstractmethod
    def state(self) -> dict:
        """What `from_state` needs, as JSON-safe lists and numbers."""

    @classmethod
    @abc.abstractmethod
    def from_state(cls, params: dict, state: dict) -> "Family": ...

    def to_json(self) -> dict:
        return {"name": self.name, "params": self.params, "state": self.state()}

    def label(self) -> str:
        settings = ",".join(f"{k}={v}" for k, v in self.params.items() if k != "members")
        members = self.params.get("members")
        inner = "+".join(m["name"] for m in members) if members else ""
        return f"{self.name}({inner}{';' if inner and settings else ''}{settings})"


def adequate_labels(adequate: np.ndarray) -> np.ndarray:
    return np.asarray(adequate) >= 0.5


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def fit_logistic(features, labels: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """(coef, intercept) of a binary LR; a column with one class only predicts its smoothed rate."""
    from sklearn.linear_model import LogisticRegression

    if labels.all() or not labels.any():
        p = (labels.sum() + 1) / (len(labels) + 2)
        return np.zeros(features.shape[1], np.float32), float(np.log(p / (1 - p)))
    lr = LogisticRegression(C=c, max_iter=3000).fit(features, labels)  # unweighted: keeps P calibrated
    return lr.coef_[0].astype(np.float32), float(lr.intercept_[0])


def arr(values, dtype=np.float32) -> np.ndarray:
    return np.asarray(values, dtype=dtype)


def rounded(a: np.ndarray, digits: int = 6) -> list:
    return np.round(np.asarray(a, dtype=np.float64), digits).tolist()
