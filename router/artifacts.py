"""The files a policy names (its classifier and its gadget guard), loaded and checked against the policy and the
catalogue. The live service runs this before a policy goes live, and `router policy check-config` and `router
policy apply` run it before a config is sent, so that what the ingress would refuse is refused a step earlier."""
from __future__ import annotations

from dataclasses import dataclass

from pathlib import Path

from models.catalogue import Catalogue, load_catalogue
from models.yaml_source import ConfigError
from router.classifier import AdequacyClassifier
from router.features import check_encoder_name
from router.guard import GadgetGuard
from router.policy import Policy, load_policy


@dataclass(frozen=True)
class PolicyArtifacts:
    classifier: AdequacyClassifier
    encoder_name: str  # the encoder the classifier was trained on (router/features.py, Encoders)
    guard: GadgetGuard | None  # loaded when the policy's guard is enabled


def load_artifacts(policy: Policy, source: str, catalogue: Catalogue) -> PolicyArtifacts:
    """The policy's classifier and guard, or ConfigError naming the file and the problem."""
    path = policy.classifier_path()
    try:
        classifier = AdequacyClassifier.load(path)
    except ValueError as exc:
        raise ConfigError(source, [f"{source}: classifier: {exc}"]) from None
    # a model that answers only when named (auto_route: false) needs no scores: a new hosted model can join the
    # policy that way before the classifier is retrained with it
    missing = [m for m, mp in policy.models.items()
               if m != policy.fallback and mp.auto_route and m not in classifier.models]
    if missing:
        raise ConfigError(source, [f"{source}: classifier: {path.name} has no scores for {missing}, which the "
                                   f"router may choose; retrain it with them, or set their auto_route: false"])
    if policy.threshold_on == "advantage" and policy.fallback not in classifier.models:
        raise ConfigError(source, [f"{source}: threshold_on: advantage compares each small model with the fallback, "
                                   f"but {path.name} has no scores for {policy.fallback!r}; retrain it with the "
                                   f"fallback's outcomes, or set threshold_on: adequacy"])
    base = catalogue.encoder.name
    try:
        check_encoder_name(classifier.encoder_name, base)
    except ValueError as exc:
        raise ConfigError(source, [f"{source}: classifier: {path.name} was trained on {exc}"]) from None
    encoder_name = classifier.encoder_name or base
    guard = None
    if policy.guard.enabled:
        try:
            guard = GadgetGuard.load(policy.guard.artifact_path(), dims=catalogue.encoder.dimensions)
            guard.check_encoder(encoder_name, base)
        except ValueError as exc:
            raise ConfigError(source, [f"{source}: guard.artifact: {exc}"]) from None
    return PolicyArtifacts(classifier, encoder_name, guard)


def load_checked_policy(path: str | Path) -> Policy:
    """A policy file (or the policy in a Serve config), checked as the ingress checks it: its fields, then the
    files it names."""
    policy = load_policy(path)
    load_artifacts(policy, str(path), load_catalogue())
    return policy
