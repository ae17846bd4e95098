"""The per-domain prior: a classifier predicts the prompt's domain (an MMLU subject, an eval set) from the
embedding, and a model's P(adequate) is the expected smoothed adequacy rate of that domain."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from router.families.base import Family, TrainingData, adequate_labels, arr, rounded


def smoothed_domain_rates(adequate: np.ndarray, domains: np.ndarray, names, smoothing: float) -> np.ndarray:
    """Each domain's mean per column, shrunk towards the overall mean: (sum + s * overall) / (n + s)."""
    adequate = np.asarray(adequate, dtype=float).reshape(len(domains), -1)
    overall = adequate.mean(axis=0)
    return np.vstack([(adequate[domains == d].sum(axis=0) + smoothing * overall) / ((domains == d).sum() + smoothing)
                      for d in names])


class DomainPrior(Family):
    name = "domain"
    grid = [{"smoothing": 5.0}, {"smoothing": 10.0}, {"smoothing": 20.0}]

    def fit(self, data: TrainingData) -> "Family":
        from sklearn.linear_model import LogisticRegression

        labels = adequate_labels(data.adequate)
        domains = np.asarray(data.domains).astype(str)
        self.domains = sorted(set(domains))
        self.rates = smoothed_domain_rates(labels, domains, self.domains, self.params.get("smoothing", 10.0))
        if len(self.domains) < 2:
            self.coef = np.zeros((1, data.x.shape[1]), np.float32)
            self.intercept = np.zeros(1, np.float32)
            return self
        lr = LogisticRegression(C=self.params.get("c", 3.0), max_iter=3000).fit(data.x, domains)
        order = [list(lr.classes_).index(d) for d in self.domains]
        coef, intercept = lr.coef_, lr.intercept_
        if len(self.domains) == 2:  # sklearn's binary form has one row; expand to two logits
            coef, intercept = np.vstack([-coef[0] / 2, coef[0] / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
        else:
            coef, intercept = coef[order], intercept[order]
        self.coef, self.intercept = coef.astype(np.float32), intercept.astype(np.float32)
        return self

    def predict(self, x: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        logits = x @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(axis=1, keepdims=True)
        return weights @ self.rates

    def state(self) -> dict:
        return {"domains": self.domains, "rates": rounded(self.rates), "coef": rounded(self.coef),
                "intercept": rounded(self.intercept)}

    @classmethod
    def from_state(cls, params: dict, state: dict) -> "Family":
        family = cls(**params)
        family.domains, family.rates = list(state["domains"]), arr(state["rates"])
        family.coef, family.intercept = arr(state["coef"]), arr(state["intercept"])
        return family
