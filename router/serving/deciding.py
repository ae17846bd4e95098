"""The ingress's routing decisions: each request's limits checked, then the requests that arrived together decided
in one batch, on one thread beside the event loop. The encoder already uses the cores, and an embedding on the
event loop would stall every other request of the replica, /healthz included."""
import asyncio
import contextvars
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi.responses import JSONResponse
from ray import serve

from router.decision import NO_TOOL_CALLS, SUSPECTED_GADGET
from router.policy import is_auto, profile_of
from router.service import RouteRequest, RoutingService
from router.serving.errors import current_request_id, error_response
from router.serving.schemas import ChatCompletionRequest
from router.serving.telemetry import RouterMetrics

logger = logging.getLogger("ray.serve")
DECISION_BATCH = 32  # most concurrent decisions that share one encoder call
# a decision that no model answers: its error code and the field at fault (else the input is too long)
REFUSALS = {SUSPECTED_GADGET: ("suspected_gadget", "messages"), NO_TOOL_CALLS: ("tool_calls_unsupported", "tools")}


class BatchedDecisions:
    """Decides requests for one ingress replica (Serve's batch queue is per process: one instance per replica)."""

    def __init__(self, service: RoutingService, metrics: RouterMetrics):
        self.service, self.metrics = service, metrics
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decide")  # one decision batch at a time

    async def decide(self, body: ChatCompletionRequest):
        """(decision, None, (prompt embedding, its encoder's name), shadow decision), or (None, an error response,
        None, None). Batched with the requests that arrived while the previous batch ran; each request's context
        (its id reaches the logs) goes with it."""
        return await self._batch((body, contextvars.copy_context()))

    # no wait for a batch to fill: one request alone goes at once, requests that queue behind a batch share the next
    @serve.batch(max_batch_size=DECISION_BATCH, batch_wait_timeout_s=0.0)
    async def _batch(self, items: list[tuple[ChatCompletionRequest, contextvars.Context]]) -> list[tuple]:
        return await asyncio.get_running_loop().run_in_executor(self.thread, self._decide_all, items)

    def _decide_all(self, items: list[tuple[ChatCompletionRequest, contextvars.Context]]) -> list[tuple]:
        started = time.perf_counter()
        live = self.service.live
        checked = [context.run(self._check, body, live) for body, context in items]
        waiting = [i for i, (error, _) in enumerate(checked) if error is None]
        requests = [RouteRequest(items[i][0].routing_text(), checked[i][1], items[i][0].model,
                                 items[i][0].needs_tool_calls()) for i in waiting]
        try:
            routed = self.service.route_many(requests, live)
        except Exception:  # one bad request must not fail the batch: decide one at a time, so only it fails
            routed = [self._route_alone(r, items[i][1], live) for r, i in zip(requests, waiting)]
        out = [(None, error, None, None) for error, _ in checked]
        if requests:
            self.metrics.batched(len(requests))
        each_ms = (time.perf_counter() - started) * 1000 / max(1, len(requests))
        for i, routed_one in zip(waiting, routed):
            if isinstance(routed_one, JSONResponse):
                out[i] = (None, routed_one, None, None)
                continue
            decision, row, shadow = routed_one
            self.metrics.decided(each_ms, decision.scores)
            if decision.model is None:
                code, param = REFUSALS.get(decision.rule, ("context_length_exceeded", "messages"))
                self.metrics.refused_request(code)
                out[i] = (None, error_response(400, decision.reason, param=param, code=code), None, None)
            else:
                # stored with its encoder's name: retraining and monitoring read only the router's own encoder's
                out[i] = (decision, None, (row[:-1], live.encoder.name), shadow)
        return out

    def _route_alone(self, request: RouteRequest, context: contextvars.Context, live):
        """One request decided on its own: its (decision, row, shadow), or a 500 naming what failed."""
        try:
            return self.service.route_many([request], live)[0]
        except Exception as exc:
            context.run(lambda: logger.exception("request %s: the routing decision failed", current_request_id()))
            return error_response(500, f"the routing decision failed: {type(exc).__name__}: {str(exc)[:200]}",
                                  "server_error", code="routing_failed")

    def _check(self, body: ChatCompletionRequest, live) -> tuple[JSONResponse | None, int]:
        """(an error response, 0) for a request the policy's limits refuse, else (None, its input tokens)."""
        profile, profiles = profile_of(body.model), list(live.policy.profiles)
        if profile is not None and profile not in live.policy.profiles:
            return error_response(404, f"model {body.model!r} does not exist: the policy has no profile {profile!r}; "
                                  f"its profiles are {profiles}", param="model", code="model_not_found"), 0
        if not is_auto(body.model) and body.model not in live.policy.models:
            choices = ", ".join(repr(name) for name in ["auto", *(f"auto:{p}" for p in profiles)])
            return error_response(404, f"model {body.model!r} does not exist; use {choices} or one of "
                                  f"{list(live.policy.models)}", param="model", code="model_not_found"), 0
        limits = live.policy.limits
        if len(body.messages) > limits.max_messages:
            return error_response(400, f"{len(body.messages)} messages exceed the limit of {limits.max_messages}",
                                  param="messages"), 0
        asked = body.max_completion_tokens or body.max_tokens
        if asked is not None and asked > limits.max_output_tokens:
            return error_response(400, f"max_tokens {asked} exceeds the limit of {limits.max_output_tokens}",
                                  param="max_tokens"), 0
        input_tokens = sum(self.service.encoder.count_tokens(m.text()) for m in body.messages)
        if input_tokens > limits.max_input_tokens:
            return error_response(400, f"{input_tokens} input tokens exceed the limit of {limits.max_input_tokens}",
                                  param="messages", code="context_length_exceeded"), 0
        return None, input_tokens
