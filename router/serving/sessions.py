"""The tier each conversation has reached, kept per ingress replica (bounded, oldest forgotten first).
With several ingress replicas, give the client a sticky route or keep this in a shared store."""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable


class SessionTiers:
    def __init__(self, max_sessions: int = 10_000, ttl_s: float = 3600.0):
        self.max_sessions, self.ttl_s = max_sessions, ttl_s
        self._tiers: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def floor(self, session: str) -> str | None:
        entry = self._tiers.get(session)
        if entry is None or time.monotonic() - entry[1] > self.ttl_s:
            return None
        return entry[0]

    def record(self, session: str, model: str, cost: Callable[[str], float]) -> None:
        current = self.floor(session)
        if current is not None and current != model:
            try:
                model = max((current, model), key=cost)
            except KeyError:  # a model the live policy no longer has
                pass
        self._tiers[session] = (model, time.monotonic())
        self._tiers.move_to_end(session)
        while len(self._tiers) > self.max_sessions:
            self._tiers.popitem(last=False)
