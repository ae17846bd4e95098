"""Feedback on answers and the decision rows behind it. Every answer becomes a row in the decision store
(router/store), keyed by the x-request-id it carried; POST /v1/feedback rates such a row later."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
from pydantic import ConfigDict, Field, StrictFloat, model_validator

from router.decision import Decision
from router.serving.schemas import MAX_ID_CHARS, JsonBody

Stars = Annotated[int, Field(strict=True, ge=1, le=5)]


class FeedbackRequest(JsonBody):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=MAX_ID_CHARS, description="the x-request-id of the answer")
    # strict, as the chat body's numbers: "score": "0.5" is a client bug
    score: StrictFloat | None = Field(None, ge=0.0, le=1.0, description="1 = the answer was good, 0 = it was bad")
    rating: Literal["like", "dislike"] | Stars | None = Field(None, description="like, dislike, or 1..5 stars")
    comment: str | None = Field(None, max_length=2000)
    metadata: dict | None = Field(None, description="anything the client wants kept with the rating")

    @model_validator(mode="after")
    def _has_a_verdict(self):
        if self.score is None and self.rating is None:
            raise ValueError("give a score (0..1) or a rating (like, dislike, or 1..5)")
        return self

    def normalised_score(self) -> float:
        """like = 1, dislike = 0, k stars = (k - 1) / 4; an explicit score wins."""
        if self.score is not None:
            return self.score
        if self.rating == "like":
            return 1.0
        if self.rating == "dislike":
            return 0.0
        return (self.rating - 1) / 4.0

    def rating_label(self) -> str | None:
        return None if self.rating is None else str(self.rating)


@dataclass
class RequestContext:
    """What the store keeps about the request itself, gathered when it arrives."""
    request_id: str
    prompt: str
    endpoint: str
    session_id: str | None
    embedding: np.ndarray | None
    embedding_encoder: str | None = None    # the encoder that made it (None: the catalogue's)
    started: float = field(default_factory=time.time)
    shadow: Decision | None = None          # the shadow policy's decision, stored beside the served one
    shadow_version: str | None = None
    disclose: bool = True                   # whether the client may see scores and reasons (disclosure.py)
    cache_control: str | None = None        # the request's Cache-Control header: may the answer cache serve it?


def decision_row(asked: RequestContext, decision: Decision, model: str | None, fallback: str | None,
                 tokens_in: int, tokens_out: int, cost: float, cascade: list | None, policy_version: str,
                 answer: str | None, keep_text: bool) -> dict:
    return {"request_id": asked.request_id, "at": time.time(), "session_id": asked.session_id,
            "endpoint": asked.endpoint, "model": model, "chosen": decision.model, "rule": decision.rule,
            "task": decision.task, "policy_version": policy_version, "profile": decision.profile,
            "scores": {k: float(v) for k, v in decision.scores.items()}, "thresholds": dict(decision.thresholds),
            "fallback": fallback, "cascade": cascade or None, "ood_distance": decision.ood_distance,
            "latency_s": time.time() - asked.started, "input_tokens": tokens_in, "output_tokens": tokens_out,
            "cost": cost, "prompt_sha256": hashlib.sha256(asked.prompt.encode()).hexdigest(),
            "prompt_embedding": None if asked.embedding is None else np.asarray(asked.embedding, "<f4").tobytes(),
            "prompt_embedding_encoder": None if asked.embedding is None else asked.embedding_encoder,
            "prompt_text": asked.prompt if keep_text else None, "response_text": answer if keep_text else None,
            "response_embedding": None, "response_toxicity": None, **shadow_columns(asked)}


def shadow_columns(asked: RequestContext) -> dict:
    shadow = asked.shadow
    return {"shadow_policy_version": asked.shadow_version if shadow else None,
            "shadow_model": shadow.model if shadow else None, "shadow_rule": shadow.rule if shadow else None,
            "shadow_scores": {k: float(v) for k, v in shadow.scores.items()} if shadow else None}
