"""A clustering router, after the Avengers line of work (Zhang et al., "The Avengers: A Simple Recipe for Uniting
Smaller Language Models", arXiv 2505.19797; LLMRouterBench, arXiv 2601.07206, finds it matches trained routers):
k-means over the training prompts' embeddings, each model's smoothed adequacy rate per cluster, and a prompt
scored by the mean rate of its `nearest` clusters. No labels beyond the outcomes: unsupervised domains."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from router.families.base import Family, TrainingData, adequate_labels, arr, rounded
from router.families.domain import smoothed_domain_rates
from router.families.neighbours import top_k_similar

SMOOTHING = 10.0  # pseudo-prompts at the overall rate, as the domain prior's middle setting


class Clusters(Family):
    name = "cluster"
    grid = [{"clusters": 16, "nearest": 1}, {"clusters": 64, "nearest": 3}]
    in_auto = False  # it lost to the other families on RouteLLM's benchmarks (bench/routellm/selection_gap_cluster.md)

    def fit(self, data: TrainingData) -> "Family":
        from sklearn.cluster import KMeans

        units = data.x[:, :-1].astype(np.float32)
        k = max(1, min(int(self.params.get("clusters", 16)), len(np.unique(units, axis=0))))
        kmeans = KMeans(n_clusters=k, n_init=3, random_state=0).fit(units)
        centroids = kmeans.cluster_centers_ / np.linalg.norm(kmeans.cluster_centers_, axis=1, keepdims=True).clip(1e-12)
        rates = smoothed_domain_rates(adequate_labels(data.adequate), kmeans.labels_, range(k), SMOOTHING)
        self.centroids, self.rates = arr(rounded(centroids)), arr(rounded(rates))  # as stored: a round trip is exact
        return self

    def predict(self, x: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        idx, _ = top_k_similar(x[:, :-1].astype(np.float32), self.centroids, int(self.params.get("nearest", 1)))
        return self.rates[idx].mean(axis=1)

    def state(self) -> dict:
        return {"centroids": rounded(self.centroids), "rates": rounded(self.rates)}

    @classmethod
    def from_state(cls, params: dict, state: dict) -> "Family":
        family = cls(**params)
        family.centroids, family.rates = arr(state["centroids"]), arr(state["rates"])
        return family
