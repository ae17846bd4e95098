"""The routing policy operators edit: models, costs, thresholds, eligibility and the fallback.

Validated by pydantic against the model catalogue; `router policy validate FILE` prints every bad field
with its line. The same policy reaches the serving ingress as its Ray Serve user_config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from models.catalogue import Catalogue, load_catalogue
from models.yaml_source import ConfigError, describe_errors, locate, read_yaml_file

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POLICY_PATH = PROJECT_ROOT / "serve_config.yaml"  # the default policy is the ingress user_config there


# an infinite cost, timeout or wait passes every bound but breaks arithmetic (inf * 0 is nan): refuse them
STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
PROFILE_NAME = r"^[a-z0-9][a-z0-9_.-]{0,39}$"
ProfileName = Annotated[str, StringConstraints(pattern=PROFILE_NAME)]
AUTO = "auto"  # the model name that asks the router to choose; "auto:NAME" chooses with the policy's profile NAME


def profile_of(model: str) -> str | None:
    """The profile a requested model name asks for: "auto:NAME" gives NAME; any other name gives None."""
    return model.split(":", 1)[1] if model.startswith(AUTO + ":") else None


def is_auto(model: str) -> bool:
    return model == AUTO or profile_of(model) is not None


class ModelPolicy(BaseModel):
    model_config = STRICT

    threshold: float = Field(0.5, ge=0.0, le=1.0, description="minimum P(adequate), a probability in [0, 1], to "
                             "choose this model; to stop choosing it, set auto_route: false")
    auto_route: bool = Field(True, description="the router may choose this model; false: only a request that names it "
                                               "(or the fallback role) reaches it")
    tasks: list[str] | None = Field(None, min_length=1, description="tasks this model may serve; default: its catalogue tasks")
    max_input_tokens: int | None = Field(None, gt=0, description="longest prompt this model may take")
    cost_per_1k_input: float | None = Field(None, ge=0, description="overrides the catalogue cost")
    cost_per_1k_output: float | None = Field(None, ge=0)
    timeout_s: float | None = Field(None, gt=0, description="give up on this model after this long; the next candidate answers")
    cascade_min_logprob: float | None = Field(None, le=0, description="cascade: if this model's mean token log-probability "
                                              "is below this, the next candidate answers instead (both are paid for)")


class Limits(BaseModel):
    model_config = STRICT

    max_body_bytes: int = Field(1_000_000, gt=0, description="largest request body accepted")
    max_messages: int = Field(256, gt=0, description="most messages in one chat request")
    max_output_tokens: int = Field(2048, gt=0, description="largest max_tokens a client may ask for")
    max_input_tokens: int = Field(8192, gt=0, description="longest conversation (router tokens) accepted")
    max_queue_wait_s: float | None = Field(30.0, gt=0, description="longest a request may wait for a busy model "
                                           "before it gets a fast 503 with Retry-After; null: no bound")
    max_request_s: float | None = Field(180.0, gt=0, description="longest a request may wait for an answer (its "
                                        "first token when streamed), over every model it tries; past it: 503 "
                                        "no_model_answered with Retry-After; null: no bound")


class Moderation(BaseModel):
    model_config = STRICT

    uncertain_band: tuple[float, float] = Field((0.35, 0.65), description="P(offensive) in this band: the large "
                                                "model decides, with the moderation prompt")
    flag_threshold: float = Field(0.5, ge=0, le=1, description="outside the band, flagged when P >= this")

    @field_validator("uncertain_band")
    @classmethod
    def _ordered(cls, band):
        if not 0 <= band[0] <= band[1] <= 1:
            raise ValueError("uncertain_band must be [low, high] with 0 <= low <= high <= 1")
        return band


class OutOfDistribution(BaseModel):
    model_config = STRICT

    enabled: bool = Field(True, description="send a prompt farther from every training prompt than the router "
                                            "artifact's threshold to the fallback (rule out_of_distribution)")
    quantile: float | None = Field(None, gt=0, le=1, description="instead of the artifact's threshold: this quantile "
                                   "of its training prompts' leave-one-out neighbour distances (the artifact's is "
                                   "`router train --ood-quantile`, 0.97 by default; lower is stricter, and stops "
                                   "gadgets that push new prompts to a small model: README, 'Routing gadgets')")


class Guard(BaseModel):
    model_config = STRICT

    enabled: bool = Field(False, description="flag prompts that carry a routing gadget (router/guard.py) and apply "
                                             "`action` to them (rule suspected_gadget)")
    artifact: str = Field("data/router/guard.json", description="the guard, relative to the project root "
                                                               "(`router guard train` writes it)")
    action: Literal["fallback", "cheapest", "reject"] = Field(
        "reject", description="a flagged prompt: the fallback answers, the cheapest eligible model answers, or the "
                              "request is refused with a 400 (the only action that defeats both directions)")

    def artifact_path(self) -> Path:
        path = Path(self.artifact)
        return path if path.is_absolute() else PROJECT_ROOT / path


class Escalation(BaseModel):
    """A cap on how often one client's requests go to the fallback: a routing gadget (or a pinned model) that
    sends every request to the large model costs the operator at most this share of that client's traffic."""
    model_config = STRICT

    enabled: bool = Field(False, description="cap each client's share of requests that go to the fallback "
                                             "(rule escalation_budget)")
    max_fallback_share: float = Field(0.8, gt=0, le=1, description="a client whose recent requests went to the "
                                      "fallback this often or more gets `action` for its next fallback request")
    window_s: float = Field(3600.0, gt=0, le=7 * 86400, description="recent: the client's requests in this many "
                            "seconds (answered ones only; a refused request is not counted)")
    min_requests: int = Field(20, ge=1, le=10_000, description="a client with fewer recent requests is not capped")
    action: Literal["cheapest", "reject"] = Field(
        "cheapest", description="past the cap, a request bound for the fallback goes to the cheapest eligible "
                                "model, or is refused with a 429 (a request that names the fallback is always "
                                "refused, never answered by another model)")
    client: Literal["address", "user"] = Field(
        "address", description="who a client is: the caller's network address, or the request's `user` field "
                               "(for an application that passes its end users' ids; clients can choose it freely)")


class AnswerCaching(BaseModel):
    """Answers kept and given again to the same request (router/serving/answer_cache.py): per ingress replica, or
    shared by all of them in the decision store's database (router/store/answers.py)."""
    model_config = STRICT

    enabled: bool = Field(False, description="keep the answers of greedy (temperature 0) requests, whole or "
                          "streamed, and give one again to a request alike in messages, settings, routed model and "
                          "policy version: a hit is decided and recorded as usual but generates nothing (cost 0)")
    ttl_s: float = Field(600.0, gt=0, le=7 * 86400, description="how long, in seconds, an answer is kept")
    max_entries: int = Field(1024, ge=1, le=1_000_000, description="answers kept (per ingress replica, or in all "
                             "when shared); the least recently used go first, or the oldest when shared")
    shared: bool = Field(False, description="keep the answers in the decision store's database, so that every "
                         "ingress replica finds them: one database read per greedy request and one write per miss")


class Access(BaseModel):
    model_config = STRICT

    api_key_file: str | None = Field(None, description="if set (or env ROUTER_API_KEY is), /v1/* needs "
                                                      "'Authorization: Bearer <key>'; the file holds the key")
    disclose_routing: bool = Field(True, description="scores, thresholds and reasons reach every client; false: only "
                                   "clients that send the operator key (x-router-operator-key) see them")
    operator_key_file: str | None = Field(None, description="the operator key's file (default: env "
                                          "ROUTER_OPERATOR_KEY); with disclose_routing false and no key, no client "
                                          "sees routing details")


class Monitor(BaseModel):
    """Thresholds of `router monitor`: what counts as drift or a problem region in the decision store."""
    model_config = STRICT

    drift_p_value: float = Field(0.01, gt=0, lt=1, description="a shift fires only when its test's p-value is below "
                                 "this: the embeddings' MMD permutation test, and the chi-square or KS test beside "
                                 "each PSI and share shift")
    cluster_psi: float = Field(0.25, gt=0, description="population stability index of the prompt clusters' shares "
                               "against the reference; above this (and significant) fires")
    model_share_shift: float = Field(0.15, gt=0, le=1, description="a model's share of answers moving by more than "
                                     "this against a reference window (and significant) fires")
    confidence_psi: float = Field(0.25, gt=0, description="PSI of a model's score histogram against a reference "
                                  "window; above this (and significant) fires")
    min_window: int = Field(50, ge=2, description="fewer rows with a prompt embedding than this in the window or the "
                            "reference: nothing is tested and nothing fires")
    problem_dislike_rate: float = Field(0.5, ge=0, le=1, description="a prompt cluster whose rated answers are "
                                        "disliked (score < 0.5) at least this often fires as a problem region")
    problem_fallback_rate: float = Field(0.5, ge=0, le=1, description="a prompt cluster that falls back (a failed "
                                         "model, a cascade, or one of fallback_rules) at least this often fires")
    problem_toxicity: float = Field(0.5, ge=0, le=1, description="a prompt cluster whose answers' mean toxicity is at "
                                    "least this fires")
    min_cluster_rows: int = Field(5, ge=1, description="a cluster needs this many rated answers (for the dislike "
                                  "rate) or rows (for the fallback rate and toxicity) before it can fire")
    fallback_rules: list[str] = Field(["fallback_no_eligible_model", "out_of_distribution", "input_too_long",
                                       "suspected_gadget"],
                                      description="decision rules that count as a fallback in a cluster's fallback "
                                      "rate (the routine fallback_no_confident_model is not one by default)")
    permutations: int = Field(500, ge=20, le=10_000, description="permutations of the MMD two-sample test")
    max_sample: int = Field(1000, ge=50, le=5000, description="the drift tests subsample each side to this many "
                            "prompts (their cost grows with its square)")


class Policy(BaseModel):
    """Structure only; `parse_policy` adds the checks against the catalogue."""

    model_config = STRICT

    version: str = Field("1", min_length=1, description="a label for this edit, reported with every decision")
    classifier: str = Field("data/router/default.json", description="router artifact, relative to the project root")
    fallback: str = Field(description="the large model that answers when no small model is suitable")
    models: dict[str, ModelPolicy] = Field(min_length=1)
    limits: Limits = Field(default_factory=Limits)
    access: Access = Field(default_factory=Access)
    moderation: Moderation = Field(default_factory=Moderation)
    ood: OutOfDistribution = Field(default_factory=OutOfDistribution)
    guard: Guard = Field(default_factory=Guard)
    escalation: Escalation = Field(default_factory=Escalation)
    cache: AnswerCaching = Field(default_factory=AnswerCaching)
    monitor: Monitor = Field(default_factory=Monitor, description="thresholds of `router monitor` (drift, problem regions)")
    threshold_on: Literal["adequacy", "advantage"] = Field(
        "adequacy", description="what each small model's threshold is compared with: its P(adequate), or its standing "
        "against the fallback, (1 + P(model) - P(fallback)) / 2 (0.5: both as likely adequate), which keeps prompts "
        "that every model is predicted to fail on a small model (router/decision.py, confidence)")
    session_keeps_tier: bool = Field(True, description="a conversation (x-session-id header or `user`) never drops "
                                                       "below the costliest model it has used")
    profiles: dict[ProfileName, dict[str, Probability]] = Field(
        default_factory=dict, description="named sets of thresholds that a client picks per request with the model "
        "name 'auto:NAME' (RouteLLM's per-request threshold); a model a profile leaves out keeps its own threshold")

    def with_thresholds(self, thresholds: dict[str, float]) -> "Policy":
        """This policy with these thresholds in place of the named models' own."""
        models = {m: mp.model_copy(update={"threshold": float(thresholds[m])}) if m in thresholds else mp
                  for m, mp in self.models.items()}
        return self.model_copy(update={"models": models})

    def with_profile(self, name: str | None) -> "Policy":
        """This policy under one of its profiles (None: this policy itself)."""
        return self if name is None else self.with_thresholds(self.profiles[name])

    def classifier_path(self) -> Path:
        path = Path(self.classifier)
        return path if path.is_absolute() else PROJECT_ROOT / path


def semantic_problems(data: Any, catalogue: Catalogue) -> list[tuple[tuple, str]]:
    """Checks against the catalogue, run on the raw data so they are reported beside any type errors."""
    if not isinstance(data, dict):
        return []
    problems: list[tuple[tuple, str]] = []
    models = data.get("models") if isinstance(data.get("models"), dict) else {}
    known_tasks = sorted({t for m in catalogue.models for t in m.tasks})
    for name, mp in models.items():
        if name not in catalogue.names():
            problems.append((("models", name), f"unknown model {name!r}; the catalogue has {catalogue.names()}"))
            continue
        mp = mp if isinstance(mp, dict) else {}
        tasks = mp.get("tasks") if isinstance(mp.get("tasks"), list) else []
        for i, task in enumerate(tasks):
            if task not in known_tasks:
                problems.append((("models", name, "tasks", i), f"unknown task {task!r}; known tasks are {known_tasks}"))
        limit, context = mp.get("max_input_tokens"), catalogue.model(name).context_length
        if isinstance(limit, int) and limit > context:
            problems.append((("models", name, "max_input_tokens"), f"{limit} exceeds the model's context length {context}"))
        if mp.get("cascade_min_logprob") is not None and not catalogue.model(name).logprobs:
            # such a server refuses every call that asks for logprobs, so the floor would fail every answer
            problems.append((("models", name, "cascade_min_logprob"), "this model's server returns no token logprobs "
                             "(catalogue: logprobs: false), so a cascade floor cannot judge its answers; remove it"))
    fallback = data.get("fallback")
    if isinstance(fallback, str) and models and fallback not in models:
        problems.append((("fallback",), f"{fallback!r} must be one of the policy's models {list(models)}"))
    profiles = data.get("profiles") if isinstance(data.get("profiles"), dict) else {}
    for profile, thresholds in profiles.items():
        for name in thresholds if isinstance(thresholds, dict) else ():
            if name not in models or name == fallback:
                problems.append((("profiles", profile, name), f"{name!r} is not one of the policy's small models "
                                 f"{[m for m in models if m != fallback]}; a profile sets their thresholds"))
    return problems


def parse_policy(data: Any, source: str = "policy", catalogue: Catalogue | None = None,
                 root: yaml.Node | None = None, prefix: tuple = ()) -> Policy:
    """Validate a policy; every problem (types, unknown names, fallback) is reported at once, with its line."""
    catalogue = catalogue or load_catalogue()
    problems: list[str] = []
    policy = None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as err:
        problems += describe_errors(err, source, root, prefix)
    problems += locate(semantic_problems(data, catalogue), source, root, prefix)
    if problems:
        raise ConfigError(source, problems)
    return policy


def load_policy(path: str | Path = DEFAULT_POLICY_PATH, catalogue: Catalogue | None = None) -> Policy:
    """Load a policy file, or the policy inside a Ray Serve config (the ingress deployment's user_config.policy)."""
    path = Path(path)
    data, root = read_yaml_file(path)
    prefix: tuple = ()
    if isinstance(data, dict) and "applications" in data:
        data, prefix = _policy_in_serve_config(data, str(path))
    return parse_policy(data, str(path), catalogue, root, prefix)


def _policy_in_serve_config(config: dict, source: str) -> tuple[Any, tuple]:
    for a, app in enumerate(config.get("applications") or []):
        for d, dep in enumerate((app or {}).get("deployments") or []):
            user_config = (dep or {}).get("user_config")
            if isinstance(user_config, dict) and "policy" in user_config:
                return user_config["policy"], ("applications", a, "deployments", d, "user_config", "policy")
    raise ConfigError(source, [f"{source}: no deployment has user_config.policy"])


