"""The routing core the ingress wraps: features → classifier → policy → decision. No Ray here.

It holds the live policy; `apply_policy` validates a new one fully before swapping it in, so a bad edit
leaves the old policy serving and the error readable at /v1/policy.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from threadpoolctl import threadpool_limits

from models.catalogue import Catalogue, load_catalogue
from router.classifier import AdequacyClassifier, feature_matrix
from router.decision import Decision, decide, pin
from router.features import Encoder
from router.policy import Policy, parse_policy
from router.yaml_source import ConfigError


@dataclass(frozen=True)
class LivePolicy:
    policy: Policy
    classifier: AdequacyClassifier
    applied_at: float


class RoutingService:
    def __init__(self, encoder: Encoder | None = None, catalogue: Catalogue | None = None):
        self.catalogue = catalogue or load_catalogue()
        self.encoder = encoder or Encoder(self.catalogue.encoder)
        # one BLAS thread for the classifier's small matmuls: OpenBLAS threads that spin after each call fight
        # onnxruntime's threads for the cores and slow the decision
        threadpool_limits(1, user_api="blas")
        self._live: LivePolicy | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()

    @property
    def live(self) -> LivePolicy:
        if self._live is None:
            raise RuntimeError("no policy has been applied yet")
        return self._live

    def apply_policy(self, data: Any, source: str = "user_config.policy") -> Policy:
        """Validate `data` as a policy and swap it in; on any problem raise ConfigError and keep the old one."""
        try:
            policy = parse_policy(data, source, self.catalogue)
            path = policy.classifier_path()
            try:
                classifier = AdequacyClassifier.load(path)
            except ValueError as exc:
                raise ConfigError(source, [f"{source}: classifier: {exc}"]) from None
            missing = [m for m in policy.models if m != policy.fallback and m not in classifier.models]
            if missing:
                raise ConfigError(source, [f"{source}: classifier: {path.name} has no scores for {missing}"])
        except ConfigError as exc:
            self.last_error = str(exc)
            raise
        with self._lock:
            self._live = LivePolicy(policy, classifier, time.time())
            self.last_error = None
        return policy

    def features(self, text: str) -> tuple:
        tokens = self.encoder.count_tokens(text)
        return feature_matrix(self.encoder.encode([text]), [tokens])[0], tokens

    def route(self, text: str, input_tokens: int, model: str = "auto") -> Decision:
        """Decide for one request. `input_tokens` counts the whole conversation; `text` is what the router reads."""
        live = self.live
        row, _ = self.features(text)
        prediction = live.classifier.predict_one(row)
        if model != "auto":
            return pin(model, prediction.task, input_tokens, live.policy, self.catalogue)
        return decide(prediction.scores, prediction.task, input_tokens, live.policy, self.catalogue)
