"""The ingress's side of the escalation budget (policy `escalation`, rule in router/escalation.py): who the client
is, and its recent requests on this replica. With several ingress replicas each sees a sample of a client's
requests, so the cap holds on each replica's share of them, not exactly over all."""
import time
from typing import Callable

from fastapi import Request
from fastapi.responses import JSONResponse

from router.decision import Decision
from router.escalation import ESCALATION_BUDGET, ClientWindows, within_budget
from router.policy import Policy
from router.serving.schemas import error_body


class EscalationBudget:
    def __init__(self, on_refusal: Callable[[str], None] = lambda code: None):
        self.windows = ClientWindows()
        self.on_refusal = on_refusal  # the refusals metric, by error code

    @staticmethod
    def client_of(request: Request, user: str | None, policy: Policy) -> str:
        if policy.escalation.client == "user" and user:
            return f"user:{user}"
        return f"address:{request.client.host if request.client else 'unknown'}"

    def check(self, decision: Decision, request: Request, user: str | None, policy: Policy,
              record: bool) -> tuple[Decision, JSONResponse | None]:
        """(the decision within the client's budget, None), or (it, a 429) when it is refused. `user`: the body's
        `user` field. `record`: the request will be answered, so it counts in the client's window (/v1/route
        only asks)."""
        if not policy.escalation.enabled:
            return decision, None
        client = self.client_of(request, user, policy)
        now, window_s = time.time(), policy.escalation.window_s
        decided = within_budget(decision, self.windows.recent(client, now, window_s), policy)
        if decided.model is None and decided.rule == ESCALATION_BUDGET:
            retry = str(self.windows.retry_after(client, now, window_s))
            self.on_refusal(ESCALATION_BUDGET)
            return decided, JSONResponse(error_body(decided.reason, "rate_limit_error", "model", ESCALATION_BUDGET),
                                         status_code=429, headers={"retry-after": retry})
        if record and decided.model is not None:
            self.windows.record(client, now, decided.model == policy.fallback)
        return decided, None
