"""Router families: each gives every model a P(adequate) for a prompt, behind one contract (base.py), and
saves as plain JSON arrays. `FAMILIES` names them; `router train --family auto` picks one by cross-validation.

Families: lr (per-model logistic regression on the embedding), knn (neighbours' outcomes in embedding space),
domain (a per-domain prior through a domain classifier), cluster (k-means clusters' adequacy rates; not in auto),
tfidf (lexical, no embedding), hand (hand-made difficulty features), length (the costliest model's predicted
answer length, learnt as a training-only target), blend (quantile blend of members,
Platt-scaled per model) and gain-blend (quantile blend of the members' advantages of the large model).
"""
from __future__ import annotations

from router.families.answer import AnswerLength
from router.families.base import Family, TrainingData
from router.families.blend import Blend, GainBlend
from router.families.clusters import Clusters
from router.families.domain import DomainPrior
from router.families.linear import HandFeatures, Logistic, Tfidf
from router.families.neighbours import Knn

FAMILIES: dict[str, type[Family]] = {f.name: f for f in (Logistic, Knn, DomainPrior, Clusters, Tfidf, HandFeatures,
                                                          AnswerLength, Blend, GainBlend)}


def family_class(name: str) -> type[Family]:
    if name not in FAMILIES:
        raise ValueError(f"unknown router family {name!r}; known: {sorted(FAMILIES)} (or 'auto')")
    return FAMILIES[name]


def make_family(name: str, params: dict | None = None) -> Family:
    return family_class(name)(**(params or {}))


def family_from_json(data: dict) -> Family:
    cls = family_class(data.get("name"))
    return cls.from_state(data.get("params") or {}, data["state"])


__all__ = ["FAMILIES", "Family", "TrainingData", "family_class", "family_from_json", "make_family"]
