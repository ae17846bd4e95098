"""The routing decision: one pure function. No Ray, no I/O; testable in microseconds.

Among the models eligible for the request (task, input length), take the cheapest whose confidence is at least its
threshold; otherwise take the fallback. Confidence is the model's predicted chance of an adequate answer, or, with
the policy's `threshold_on: advantage`, its standing against the fallback (`confidence` below).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

from models.catalogue import Catalogue
from router.policy import Policy

CHEAPEST_CONFIDENT = "cheapest_confident"
FALLBACK_NOT_CONFIDENT = "fallback_no_confident_model"
FALLBACK_NONE_ELIGIBLE = "fallback_no_eligible_model"
PINNED = "pinned"
SESSION_FLOOR = "session_floor"
INPUT_TOO_LONG = "input_too_long"
OUT_OF_DISTRIBUTION = "out_of_distribution"
SUSPECTED_GADGET = "suspected_gadget"
NO_TOOL_CALLS = "no_tool_calling_model"


@dataclass(frozen=True)
class Decision:
    model: str | None          # None only when the input is too long for every model, the fallback included
    rule: str
    reason: str
    task: str
    input_tokens: int
    scores: Mapping[str, float] = field(default_factory=dict)
    thresholds: Mapping[str, float] = field(default_factory=dict)
    eligible: tuple[str, ...] = ()
    ood_distance: float | None = None   # to the nearest training prompt (1 - cosine similarity)
    ood_threshold: float | None = None
    profile: str | None = None  # the policy profile the client asked for ("auto:NAME"), whose thresholds decided
    confidence: Mapping[str, float] = field(default_factory=dict)  # what each eligible model's threshold was held to

    def as_dict(self) -> dict:
        return {"model": self.model, "rule": self.rule, "reason": self.reason, "task": self.task,
                "profile": self.profile, "input_tokens": self.input_tokens,
                "scores": {k: round(v, 4) for k, v in self.scores.items()}, "thresholds": dict(self.thresholds),
                "confidence": {k: round(v, 4) for k, v in self.confidence.items()}, "eligible": list(self.eligible),
                "ood_distance": None if self.ood_distance is None else round(self.ood_distance, 4),
                "ood_threshold": None if self.ood_threshold is None else round(self.ood_threshold, 4)}


def blended_cost(name: str, policy: Policy, catalogue: Catalogue) -> float:
    entry, mp = catalogue.model(name), policy.models[name]
    cin = mp.cost_per_1k_input if mp.cost_per_1k_input is not None else entry.cost_per_1k_input
    cout = mp.cost_per_1k_output if mp.cost_per_1k_output is not None else entry.cost_per_1k_output
    return cin + cout


def is_eligible(name: str, task: str, input_tokens: int, policy: Policy, catalogue: Catalogue) -> bool:
    mp, entry = policy.models[name], catalogue.model(name)
    tasks = mp.tasks or entry.tasks
    limit = mp.max_input_tokens or entry.context_length
    return mp.auto_route and task in tasks and input_tokens <= limit


def fits(name: str, input_tokens: int, policy: Policy, catalogue: Catalogue) -> bool:
    return input_tokens <= (policy.models[name].max_input_tokens or catalogue.model(name).context_length)


def is_out_of_distribution(distance: float | None, threshold: float | None, policy: Policy) -> bool:
    return policy.ood.enabled and distance is not None and threshold is not None and distance > threshold


def confidence(scores: Mapping[str, float], name: str, policy: Policy) -> float | None:
    """What a small model's threshold is compared with. `adequacy`: its P(adequate). `advantage`: its standing
    against the fallback, (1 + P(model) - P(fallback)) / 2, which is 0.5 when both are as likely adequate. On the
    standing, one threshold t for every small model is the report's sweep at cut 1 - 2t (router/offline/report.py):
    the fallback answers only when it is likelier to be adequate by more than the cut, so a prompt that every
    model is predicted to fail stays on a small model. None: a score it needs is missing."""
    score = scores.get(name)
    if score is None or policy.threshold_on == "adequacy":
        return score
    large = scores.get(policy.fallback)
    return None if large is None else (1.0 + score - large) / 2.0


def _shown(scores: Mapping[str, float], name: str, policy: Policy) -> str:
    value = confidence(scores, name, policy)
    shown = "nan" if value is None else f"{value:.2f}"
    if policy.threshold_on == "adequacy":
        return shown
    return f"{shown} (P {scores.get(name, float('nan')):.2f} against {scores.get(policy.fallback, float('nan')):.2f})"


def decide(scores: Mapping[str, float], task: str, input_tokens: int, policy: Policy, catalogue: Catalogue,
           ood_distance: float | None = None, ood_threshold: float | None = None, suspected: bool = False) -> Decision:
    """`ood_distance`: how far the prompt lies from the router's training prompts; past `ood_threshold` (with
    the policy's `ood.enabled`) the router's scores are not trusted and the fallback answers. `suspected`: the
    gadget guard flagged the prompt; with `guard.enabled` the policy's guard action decides instead of the scores."""
    thresholds = {m: mp.threshold for m, mp in policy.models.items() if m != policy.fallback}
    smalls = sorted(thresholds, key=lambda m: (blended_cost(m, policy, catalogue), m))
    eligible = tuple(m for m in smalls if is_eligible(m, task, input_tokens, policy, catalogue))
    held = {m: confidence(scores, m, policy) for m in eligible}
    common = dict(task=task, input_tokens=input_tokens, scores=dict(scores), thresholds=thresholds, eligible=eligible,
                  ood_distance=ood_distance, ood_threshold=ood_threshold,
                  confidence={m: v for m, v in held.items() if v is not None})
    if suspected and policy.guard.enabled:
        return _guarded(policy, eligible, input_tokens, catalogue, common)
    unfamiliar = is_out_of_distribution(ood_distance, ood_threshold, policy)
    measure = "P(adequate)" if policy.threshold_on == "adequacy" else f"standing against {policy.fallback}"
    for name in () if unfamiliar else eligible:
        value = held[name]
        if value is not None and value >= thresholds[name]:
            return Decision(name, CHEAPEST_CONFIDENT, f"{name} is the cheapest eligible model with {measure} "
                            f"{_shown(scores, name, policy)} >= {thresholds[name]:.2f}", **common)
    if not fits(policy.fallback, input_tokens, policy, catalogue):
        return Decision(None, INPUT_TOO_LONG, f"{input_tokens} input tokens exceed every model's limit", **common)
    if unfamiliar:
        return Decision(policy.fallback, OUT_OF_DISTRIBUTION, f"the prompt is unlike the router's training prompts "
                        f"(distance {ood_distance:.3f} > {ood_threshold:.3f}); its scores are not trusted", **common)
    if eligible:
        below = ", ".join(f"{m} {_shown(scores, m, policy)}<{thresholds[m]:.2f}" for m in eligible)
        return Decision(policy.fallback, FALLBACK_NOT_CONFIDENT, f"no eligible small model is confident ("
                        f"{'' if policy.threshold_on == 'adequacy' else measure + ': '}{below})", **common)
    return Decision(policy.fallback, FALLBACK_NONE_ELIGIBLE,
                    f"no small model is eligible for task {task!r} with {input_tokens} input tokens", **common)


def _guarded(policy: Policy, eligible: tuple[str, ...], input_tokens: int, catalogue: Catalogue,
             common: dict) -> Decision:
    """The policy's action for a prompt the gadget guard flagged: its scores may have been steered, so they
    choose nothing."""
    action = policy.guard.action
    why = f"the prompt looks like it carries a routing gadget; the policy's guard action is {action!r}"
    if action == "reject":
        return Decision(None, SUSPECTED_GADGET, why, **common)
    model = eligible[0] if action == "cheapest" and eligible else policy.fallback
    if not fits(model, input_tokens, policy, catalogue):
        return Decision(None, INPUT_TOO_LONG, f"{input_tokens} input tokens exceed {model}'s limit", **common)
    return Decision(model, SUSPECTED_GADGET, why, **common)


def pin(model: str, task: str, input_tokens: int, policy: Policy, catalogue: Catalogue) -> Decision:
    """The client named a model: honour it if the policy serves it and the input fits."""
    if model not in policy.models:
        raise KeyError(model)
    if not fits(model, input_tokens, policy, catalogue):
        return Decision(None, INPUT_TOO_LONG, f"{input_tokens} input tokens exceed {model}'s limit", task, input_tokens)
    return Decision(model, PINNED, f"the request named {model}", task, input_tokens)


def tool_calling(policy: Policy, catalogue: Catalogue) -> Policy | None:
    """The policy a request with tools is decided and answered under: only the models that make tool calls
    (catalogue `tool_calls`), each with its own settings, and as the fallback the policy's own when it makes them,
    else the costliest that does. None when no model the policy serves makes them."""
    callers = [m for m in policy.models if catalogue.model(m).tool_calls]
    if not callers:
        return None
    fallback = policy.fallback if policy.fallback in callers else \
        max(callers, key=lambda m: (blended_cost(m, policy, catalogue), m))
    return policy.model_copy(update={"models": {m: policy.models[m] for m in callers}, "fallback": fallback})


def refuse_tools(model: str, policy: Policy, callers: Policy | None, task: str, input_tokens: int) -> Decision | None:
    """The refusal of a request with tools that no model here can answer with tool calls (`callers`: the policy's
    tool_calling() form), or that names a model which cannot; None when it can be decided under `callers`."""
    if callers is None:
        why = "no model this policy serves makes tool calls (a catalogue entry with tool_calls: true, such as a " \
              "hosted model, can join the policy)"
    elif model in policy.models and model not in callers.models:
        why = f"{model} does not make tool calls; the models that do are {sorted(callers.models)}"
    else:
        return None
    return Decision(None, NO_TOOL_CALLS, why, task, input_tokens)


def fallback_chain(decision: Decision, policy: Policy) -> list[str]:
    """Who answers if the chosen model fails: the eligible models after it, cheapest first, then the fallback."""
    chain = [decision.model]
    if decision.model in decision.eligible:
        chain += list(decision.eligible[decision.eligible.index(decision.model) + 1:])
    chain.append(policy.fallback)
    return list(dict.fromkeys(m for m in chain if m))


def apply_session_floor(decision: Decision, floor: str | None, policy: Policy, catalogue: Catalogue) -> Decision:
    """A follow-up in a conversation stays on at least the tier the conversation reached, so that
    "now make it faster" after a code answer does not drop to the tiny model."""
    if (not policy.session_keeps_tier or floor is None or decision.model is None or floor not in policy.models
            or decision.rule == PINNED or not fits(floor, decision.input_tokens, policy, catalogue)):
        return decision
    if blended_cost(floor, policy, catalogue) <= blended_cost(decision.model, policy, catalogue):
        return decision
    return replace(decision, model=floor, rule=SESSION_FLOOR, reason=f"the conversation already reached {floor}; "
                   f"the router alone chose {decision.model} ({decision.reason})")


def should_escalate(mean_logprob: float | None, min_logprob: float | None) -> bool:
    """Cascade rule (FrugalGPT-style): escalate when the model's own confidence, its mean token
    log-probability, is below the policy's floor. No floor, or no log-probabilities, means no escalation."""
    return min_logprob is not None and mean_logprob is not None and mean_logprob < min_logprob


def moderation_needs_large_model(probability: float, policy: Policy) -> bool:
    """The specialist's P(offensive) inside the policy's uncertain band (inclusive): the large model decides."""
    low, high = policy.moderation.uncertain_band
    return low <= probability <= high


def specialist_flags(probability: float, policy: Policy) -> bool:
    return probability >= policy.moderation.flag_threshold


def large_model_flags(reply: str) -> bool:
    """The moderation rubric asks for a last word of yes or no; anything else is not a flag."""
    words = reply.strip().lower().split()
    return bool(words) and words[-1].strip(".!\"'").startswith("yes")
