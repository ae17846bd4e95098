"""Feedback on answers, keyed by the x-request-id the answer carried: what the router decided for that request
is remembered (bounded, per ingress replica), so a later POST /v1/feedback can be joined to it and appended to a
JSONL log, the raw material for new outcome rows."""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_LOG = Path.home() / ".cache" / "ensemble-router" / "feedback.jsonl"


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=200, description="the x-request-id of the answer")
    score: float = Field(ge=0.0, le=1.0, description="1 = the answer was good, 0 = it was bad")
    comment: str | None = Field(None, max_length=2000)


class DecisionLog:
    """The last `capacity` answered requests: request id -> what was decided and who answered."""

    def __init__(self, capacity: int = 10_000):
        self.capacity = capacity
        self._records: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, request_id: str, prompt: str, record: dict) -> None:
        if not request_id or request_id == "-":
            return
        entry = {**record, "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest(), "answered_at": time.time()}
        with self._lock:
            self._records[request_id] = entry
            self._records.move_to_end(request_id)
            while len(self._records) > self.capacity:
                self._records.popitem(last=False)

    def get(self, request_id: str) -> dict | None:
        with self._lock:
            return self._records.get(request_id)


def log_path() -> Path:
    return Path(os.environ.get("ROUTER_FEEDBACK_LOG", DEFAULT_LOG)).expanduser()


def append_feedback(feedback: FeedbackRequest, decision: dict, path: Path | None = None) -> dict:
    """One JSON line per feedback: the feedback, the decision it is about, and when it came."""
    path = path or log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {**feedback.model_dump(), "decision": decision, "received_at": time.time()}
    with path.open("a") as f:
        f.write(json.dumps(line) + "\n")
    return line
