"""The routing core the ingress wraps: features → classifier → policy → decision. No Ray here.

It holds the live policy; `apply_policy` validates a new one fully before swapping it in, so a bad edit
leaves the old policy serving and the error readable at /v1/policy. `refused` names the edit that was refused
until a valid one arrives; `restore` starts on the last good policy when the given one is refused.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from threadpoolctl import threadpool_limits

from models.catalogue import Catalogue, load_catalogue
from router.classifier import AdequacyClassifier, feature_matrix
from router.decision import Decision, decide, pin, refuse_tools, tool_calling
from router.features import Encoder, Encoders
from router.artifacts import load_artifacts
from router.guard import GadgetGuard
from router.policy import Policy, is_auto, parse_policy, profile_of
from models.yaml_source import ConfigError


@dataclass(frozen=True)
class LivePolicy:
    policy: Policy
    classifier: AdequacyClassifier
    applied_at: float
    guard: GadgetGuard | None = None  # loaded when the policy's guard is enabled
    encoder: Any = None  # the encoder the classifier was trained on (router/features.py, Encoders)
    profiles: Mapping[str, Policy] = field(default_factory=dict)  # the policy under each of its profiles

    def deciding(self, model: str) -> Policy:
        """The policy that decides a request for `model`: the profile's for "auto:NAME", else the policy itself."""
        profile = profile_of(model)
        return self.policy if profile is None else self.profiles[profile]


@dataclass(frozen=True)
class RefusedEdit:
    """A policy edit that did not go live: its version label (when it has one) and every problem found."""
    version: str | None
    message: str
    at: float

    def as_dict(self) -> dict:
        return {"version": self.version, "message": self.message, "at": self.at}


def version_label(data: Any) -> str | None:
    version = data.get("version") if isinstance(data, dict) else None
    return None if version is None else str(version)


class RoutingService:
    def __init__(self, encoder: Encoder | None = None, catalogue: Catalogue | None = None):
        self.catalogue = catalogue or load_catalogue()
        self.encoders = Encoders(encoder or Encoder(self.catalogue.encoder))
        # one BLAS thread for the classifier's small matmuls: OpenBLAS threads that spin after each call fight
        # onnxruntime's threads for the cores and slow the decision
        threadpool_limits(1, user_api="blas")
        self._live: LivePolicy | None = None
        self.refused: RefusedEdit | None = None  # the edit refused since the last valid one
        self.shadow: LivePolicy | None = None  # a candidate policy whose decisions are stored, never served
        self.shadow_refused: RefusedEdit | None = None
        self._lock = threading.Lock()

    @property
    def live(self) -> LivePolicy:
        if self._live is None:
            raise RuntimeError("no policy has been applied yet")
        return self._live

    @property
    def encoder(self):
        """The live classifier's encoder (before any policy: the catalogue's)."""
        return self._live.encoder if self._live is not None else self.encoders.base

    @property
    def has_policy(self) -> bool:
        return self._live is not None

    @property
    def last_error(self) -> str | None:
        return self.refused.message if self.refused else None

    def _load(self, data: Any, source: str) -> LivePolicy:
        """A validated policy with its classifier, or ConfigError naming every problem."""
        policy = parse_policy(data, source, self.catalogue)
        artifacts = load_artifacts(policy, source, self.catalogue)
        encoder = self.encoders.get(artifacts.encoder_name)
        artifacts.classifier.ood_threshold_at(policy.ood.quantile)  # its neighbour distances, off the request path
        return LivePolicy(policy, artifacts.classifier, time.time(), artifacts.guard, encoder,
                          {name: policy.with_profile(name) for name in policy.profiles})

    def apply_policy(self, data: Any, source: str = "user_config.policy") -> Policy:
        """Validate `data` as a policy and swap it in; on any problem raise ConfigError and keep the old one."""
        try:
            live = self._load(data, source)
        except ConfigError as exc:
            self.refused = RefusedEdit(version_label(data), str(exc), time.time())
            raise
        with self._lock:
            self._live = live
            self.refused = None
        return live.policy

    def apply_shadow(self, data: Any, source: str = "user_config.shadow_policy") -> Policy | None:
        """A candidate policy that decides beside the live one on every request and never serves; None clears
        it. A refused candidate raises ConfigError and leaves the earlier shadow (and the live policy) as it was."""
        if data is None:
            self.shadow, self.shadow_refused = None, None
            return None
        try:
            shadow = self._load(data, source)
        except ConfigError as exc:
            self.shadow_refused = RefusedEdit(version_label(data), str(exc), time.time())
            raise
        self.shadow, self.shadow_refused = shadow, None
        return shadow.policy

    def take(self, data: Any, load_last_good: Callable[[], Any]) -> tuple[str, Policy]:
        """A policy from the deployment's config. Returns ("applied", it) when it went live; ("refused", the one
        still live) when it was refused; ("restored", the last good one) when it was refused at a start with no
        policy live yet and the last good one went live instead. With no last good policy, a refused first
        policy raises ConfigError: the deployment must not start on nothing."""
        try:
            return "applied", self.apply_policy(data)
        except ConfigError:
            if self.has_policy:
                return "refused", self.live.policy
            last_good = load_last_good()
            if last_good is None:
                raise
            return "restored", self.restore(last_good)

    def restore(self, last_good: Any) -> Policy:
        """After `apply_policy` refused the policy given at start, go live on `last_good` and keep the refusal
        on record. Raises ConfigError naming both if the last good policy no longer validates either."""
        refused = self.refused
        try:
            policy = self.apply_policy(last_good, "last good policy")
        except ConfigError as exc:
            raise ConfigError("user_config.policy", [refused.message if refused else "refused",
                                                     f"and the last good policy cannot be used: {exc}"]) from None
        self.refused = refused
        return policy

    def features(self, text: str) -> tuple:
        tokens = self.encoder.count_tokens(text)
        return feature_matrix(self.encoder.encode([text]), [tokens])[0], tokens

    def route(self, text: str, input_tokens: int, model: str = "auto") -> Decision:
        """Decide for one request. `input_tokens` counts the whole conversation; `text` is what the router reads."""
        return self.route_with_features(text, input_tokens, model)[0]

    def route_with_features(self, text: str, input_tokens: int, model: str = "auto"):
        """(the decision, the feature row it was made from), so the caller can keep the embedding."""
        return self.route_many([RouteRequest(text, input_tokens, model)])[0][:2]

    def route_many(self, requests: Sequence["RouteRequest"], live: LivePolicy | None = None
                   ) -> list[tuple[Decision, np.ndarray, Decision | None]]:
        """(decision, feature row, shadow decision or None) for each request, the embeddings and classifier run as
        one batch: concurrent requests cost one encoder call (the ingress batches them), the policy runs per row.
        `live`: the policy to decide with (default: the one live now), so a caller knows which encoder made the rows."""
        if not requests:
            return []
        texts = [r.text for r in requests]
        live, shadow = live or self.live, self.shadow
        tokens = [live.encoder.count_tokens(t) for t in texts]
        rows = feature_matrix(live.encoder.encode(texts), tokens)
        decisions = self.decide_many(live, rows, requests)
        if shadow is None:
            return [(d, row, None) for d, row in zip(decisions, rows)]
        # a model or profile the shadow policy does not serve is routed as "auto" there, rather than failing the request
        shadowed = [r if r.model in shadow.policy.models or profile_of(r.model) in shadow.profiles
                    else RouteRequest(r.text, r.input_tokens) for r in requests]
        shadow_rows = rows if shadow.encoder is live.encoder else feature_matrix(shadow.encoder.encode(texts), tokens)
        return list(zip(decisions, rows, self.decide_many(shadow, shadow_rows, shadowed)))

    def decide_many(self, live: LivePolicy, rows: np.ndarray, requests: Sequence["RouteRequest"]) -> list[Decision]:
        """The classifier on every row at once, then the pure policy decision for each."""
        predictions = live.classifier.predict(rows, [r.text for r in requests])
        suspected = live.guard.flags(rows[:, :-1]) if live.guard is not None else np.zeros(len(rows), bool)
        return [self._decide(live, r, p, bool(flag)) for r, p, flag in zip(requests, predictions, suspected)]

    def _decide(self, live: LivePolicy, request: "RouteRequest", prediction, suspected: bool) -> Decision:
        """One request's pure decision: under its profile's policy, and among the models that make tool calls
        alone when it carries tools."""
        policy, task, tokens = live.deciding(request.model), prediction.task, request.input_tokens
        if request.needs_tool_calls:
            callers = tool_calling(policy, self.catalogue)
            if (refused := refuse_tools(request.model, policy, callers, task, tokens)) is not None:
                return refused
            policy = callers
        if not is_auto(request.model):
            return pin(request.model, task, tokens, policy, self.catalogue)
        threshold = live.classifier.ood_threshold_at(policy.ood.quantile)
        decision = replace(decide(prediction.scores, task, tokens, policy, self.catalogue, prediction.ood_distance,
                                  threshold, suspected), profile=profile_of(request.model))
        return replace(decision, reason=f"{decision.reason}; the request has tools, which only "
                                        f"{', '.join(policy.models)} answer") if request.needs_tool_calls else decision


@dataclass(frozen=True)
class RouteRequest:
    """What a decision needs: the text the router reads, the conversation's tokens, and the model asked for."""
    text: str
    input_tokens: int
    model: str = "auto"
    needs_tool_calls: bool = False  # the request has tools: only models that make tool calls may answer it
