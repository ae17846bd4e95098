"""Confounder gadgets against the router: the attack of "Rerouting LLM Routers" (Shafran, Schuster, Ristenpart,
Shmatikov, 2025). A gadget is a short token sequence that, prepended to any query, steers a learned router: "up"
sends queries to the large (costly) model, "down" to a small one.

The search is the paper's greedy coordinate search for a query-independent gadget: start from random tokens;
for each position in turn, try `candidates` random replacements and keep the one that moves the router most over
a batch of queries. What the search may read is a view:
- `WhiteBoxView`: the router itself in-process (the artifact, the policy, the guard), with its scores;
- `HttpView` (attack_http.py): only what a client of POST /v1/route sees: which model answers, and the scores
  when the policy discloses them. A refused request (the guard's reject action) counts as a failure.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
from tqdm import tqdm

from models.catalogue import Catalogue
from router.classifier import AdequacyClassifier, feature_matrix
from router.decision import SUSPECTED_GADGET, Decision, decide
from router.features import Encoder
from router.guard import GadgetGuard
from router.policy import Policy

UP, DOWN = "up", "down"


@dataclass
class Observation:
    """Per text: routed to the large model, routed to a small one, refused or flagged, and the margin (how far
    the most confident eligible small model is above its threshold), when the view shows scores."""
    to_large: np.ndarray
    to_small: np.ndarray
    flagged: np.ndarray
    margin: np.ndarray | None = None


class View(Protocol):
    def observe(self, texts: Sequence[str]) -> Observation: ...


def margin_of(confidence: dict, thresholds: dict, eligible: Sequence[str]) -> float:
    """How far the most confident eligible small model is above its threshold (`confidence`: a decision's, the
    value each threshold is held to)."""
    gaps = [confidence[m] - thresholds[m] for m in eligible if m in confidence and m in thresholds]
    return max(gaps) if gaps else -1.0


class WhiteBoxView:
    """The router in-process: encoder, classifier, policy and (when given) the gadget guard, deciding with the
    function that serves."""

    def __init__(self, classifier: AdequacyClassifier, policy: Policy, catalogue: Catalogue, encoder: Encoder,
                 guard: GadgetGuard | None = None):
        self.classifier, self.policy, self.catalogue, self.encoder, self.guard = classifier, policy, catalogue, encoder, guard

    def decisions(self, texts: Sequence[str]) -> list[Decision]:
        tokens = [self.encoder.count_tokens(t) for t in texts]
        x = feature_matrix(self.encoder.encode(list(texts)), tokens)
        probs = self.classifier.predict_proba(x, texts)
        tasks = np.asarray(self.classifier.tasks)[self.classifier.predict_tasks(x).argmax(axis=1)]
        distances = self.classifier.ood_distances(x)
        suspected = self.guard.flags(x[:, :-1]) if self.guard is not None else np.zeros(len(texts), bool)
        threshold = self.classifier.ood_threshold_at(self.policy.ood.quantile)
        return [decide(dict(zip(self.classifier.models, map(float, probs[i]))), str(tasks[i]), tokens[i],
                       self.policy, self.catalogue, None if distances is None else float(distances[i]),
                       threshold, bool(suspected[i])) for i in range(len(texts))]

    def observe(self, texts: Sequence[str]) -> Observation:
        decisions, fallback = self.decisions(texts), self.policy.fallback
        return Observation(np.array([d.model == fallback for d in decisions], bool),
                           np.array([d.model not in (None, fallback) for d in decisions], bool),
                           np.array([d.rule == SUSPECTED_GADGET for d in decisions], bool),
                           np.array([margin_of(d.confidence, d.thresholds, d.eligible) for d in decisions], float))


def success(obs: Observation, direction: str) -> np.ndarray:
    """What the attacker wants, per text: the large model (up) or a small one (down), and not refused."""
    return obs.to_large if direction == UP else obs.to_small


def objective(obs: Observation, direction: str) -> float:
    """The share steered, with the mean margin as a tie-break when the view shows scores."""
    value = float(success(obs, direction).mean())
    if obs.margin is not None:
        sign = -1.0 if direction == UP else 1.0
        value += 0.01 * float(np.clip(sign * obs.margin, -1, 1).mean())
    return value


def token_vocabulary(encoder: Encoder, min_len: int = 3, max_len: int = 12) -> list[str]:
    """Whole-word tokens of the router's own tokenizer: the paper's gadgets are token sequences."""
    words = [t for t in encoder.tokenizer.get_vocab() if t.isalpha() and t.isascii() and min_len <= len(t) <= max_len]
    return sorted(words)


def natural_vocabulary(texts: Sequence[str], size: int = 600) -> list[str]:
    """Frequent words of ordinary prompts: a gadget built from them reads as plain words (lower perplexity),
    the variant the paper uses to evade perplexity filters."""
    counts: dict[str, int] = {}
    for text in texts:
        for word in re.findall(r"[a-z]{3,12}", text.lower()):
            counts[word] = counts.get(word, 0) + 1
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]]


@dataclass
class Gadget:
    words: list[str]
    direction: str
    objective: float
    history: list[float] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(self.words)


def prefixed(gadget: str, prompts: Sequence[str]) -> list[str]:
    return [f"{gadget} {p}" for p in prompts]


def find_gadget(view: View, prompts: Sequence[str], direction: str, vocabulary: Sequence[str], length: int = 10,
                candidates: int = 24, rounds: int = 1, seed: int = 0, progress: bool = True) -> Gadget:
    """Greedy coordinate search for one gadget that steers `prompts` in `direction`."""
    if direction not in (UP, DOWN):
        raise ValueError(f"direction must be {UP!r} or {DOWN!r}, not {direction!r}")
    if not prompts or not vocabulary:
        raise ValueError("the search needs prompts and a vocabulary")
    rng = random.Random(seed)
    words = [rng.choice(vocabulary) for _ in range(length)]
    best = objective(view.observe(prefixed(" ".join(words), prompts)), direction)
    history = [best]
    steps = tqdm(range(rounds * length), desc=f"gadget search ({direction})", unit="step", disable=not progress)
    for step in steps:
        position = step % length
        tries = rng.sample(list(vocabulary), min(candidates, len(vocabulary)))
        texts = [t for word in tries for t in prefixed(" ".join(words[:position] + [word] + words[position + 1:]),
                                                       prompts)]
        obs = view.observe(texts)
        n = len(prompts)
        for k, word in enumerate(tries):
            part = Observation(obs.to_large[k * n:(k + 1) * n], obs.to_small[k * n:(k + 1) * n],
                               obs.flagged[k * n:(k + 1) * n],
                               None if obs.margin is None else obs.margin[k * n:(k + 1) * n])
            value = objective(part, direction)
            if value > best:
                best, words = value, words[:position] + [word] + words[position + 1:]
        history.append(best)
        steps.set_postfix(objective=f"{best:.3f}")
    return Gadget(words, direction, best, history)


def flip_rates(view: View, prompts: Sequence[str], gadget: str) -> dict:
    """On `prompts` (held out from the search): the share whose decision the gadget flips up (small to large) and
    down (large to small), and the share of gadget-carrying prompts that were flagged or refused."""
    clean, attacked = view.observe(list(prompts)), view.observe(prefixed(gadget, prompts))
    small, large = clean.to_small, clean.to_large
    return {"prompts": len(prompts),
            "up": float((attacked.to_large & small).sum() / max(small.sum(), 1)),
            "down": float((attacked.to_small & large).sum() / max(large.sum(), 1)),
            "clean_small": int(small.sum()), "clean_large": int(large.sum()),
            "flagged": float(attacked.flagged.mean()), "clean_flagged": float(clean.flagged.mean())}
