"""The escalation budget (policy `escalation`): each client's recent share of requests that went to the fallback,
and the pure rule that caps it. No Ray; the ingress keeps one `ClientWindows` per replica."""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, replace

from router.decision import PINNED, Decision
from router.policy import Policy

ESCALATION_BUDGET = "escalation_budget"


@dataclass(frozen=True)
class RecentRequests:
    """One client's requests in the policy's window: how many, and how many went to the fallback."""
    total: int
    to_fallback: int


def within_budget(decision: Decision, recent: RecentRequests, policy: Policy) -> Decision:
    """`decision` unchanged unless it goes to the fallback while this client is at or over the policy's cap; then
    the cheapest eligible model answers (action `cheapest`), or nobody does (model None: refused), always for a
    request that named the fallback itself."""
    cap = policy.escalation
    if not cap.enabled or decision.model != policy.fallback or recent.total < cap.min_requests:
        return decision
    share = recent.to_fallback / recent.total
    if share < cap.max_fallback_share:
        return decision
    why = (f"{recent.to_fallback} of this client's {recent.total} requests in the last {cap.window_s:g} s went to "
           f"{policy.fallback} ({share:.0%}, at or over the policy's cap of {cap.max_fallback_share:.0%})")
    cheapest = decision.eligible[0] if decision.eligible else None  # eligible: cheapest first, input fits
    if decision.rule == PINNED or cap.action == "reject" or cheapest is None:
        then = ("the request named it" if decision.rule == PINNED else
                "the policy's action is 'reject'" if cap.action == "reject" else "no small model is eligible")
        return _replaced(decision, None, f"{why}; {then}, so the request is refused")
    return _replaced(decision, cheapest, f"{why}; the cheapest eligible model answers instead ({decision.reason})")


def _replaced(decision: Decision, model: str | None, reason: str) -> Decision:
    return replace(decision, model=model, rule=ESCALATION_BUDGET, reason=reason)


class ClientWindows:
    """Each client's recent requests as (time, went to the fallback), in memory and bounded: past `max_clients`
    the least recently seen client is forgotten, and a client keeps at most `max_per_client` requests."""

    def __init__(self, max_clients: int = 100_000, max_per_client: int = 10_000):
        self.max_clients, self.max_per_client = max_clients, max_per_client
        self._clients: OrderedDict[str, deque] = OrderedDict()

    def recent(self, client: str, now: float, window_s: float) -> RecentRequests:
        requests = self._clients.get(client)
        if requests is None:
            return RecentRequests(0, 0)
        while requests and requests[0][0] <= now - window_s:
            requests.popleft()
        return RecentRequests(len(requests), sum(to_fallback for _, to_fallback in requests))

    def record(self, client: str, now: float, to_fallback: bool) -> None:
        requests = self._clients.pop(client, None) or deque(maxlen=self.max_per_client)
        requests.append((now, to_fallback))
        self._clients[client] = requests  # now the most recently seen
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)

    def retry_after(self, client: str, now: float, window_s: float) -> int:
        """Seconds until the client's oldest counted request leaves the window (at least 1)."""
        requests = self._clients.get(client)
        oldest = requests[0][0] if requests else now
        return max(1, int(oldest + window_s - now) + 1)
