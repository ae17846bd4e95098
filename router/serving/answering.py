"""A decided request answered, whole or streamed, with the nets every answer shares: the fallback chain, the
cascade, the answer cache, the log line, the metrics, the decision store's row and the x-router-* headers."""
import logging

from fastapi.responses import JSONResponse
from ray.serve.handle import DeploymentHandle

from router.decision import Decision, fallback_chain, should_escalate
from router.service import RoutingService
from router.serving.answer_cache import CACHE_HEADER, PolicyAnswerCache, RecordedDeltas, ReplayedDeltas
from router.serving.describer import AnswerDescriber
from router.serving.disclosure import routing_headers, shown_headers
from router.serving.errors import current_request_id
from router.serving.fallback import first_answer
from router.serving.feedback import RequestContext, decision_row
from router.serving.queueing import stamped
from router.serving.streaming import ModelStreamResponse
from router.serving.telemetry import RouterMetrics
from router.store import DecisionStore

logger = logging.getLogger("ray.serve")


class DecisionRecorder:
    """Every answer becomes a row of the decision store (feedback, sessions, monitoring, retraining); its
    embedding and toxicity join the row later, off the request path."""

    def __init__(self, store: DecisionStore, describer: AnswerDescriber, service: RoutingService, store_text: bool,
                 enabled: bool):
        self.store, self.describer, self.service = store, describer, service
        self.store_text = store_text  # prompts and answers can hold personal data: off unless asked for
        self.enabled = enabled  # off only to measure what logging costs (make bench)

    def record(self, asked: RequestContext, decision: Decision, model: str | None, fallback: str | None,
               tokens_in: int, tokens_out: int, cost: float, cascade: list | None, answer: str) -> None:
        if not self.enabled:
            return
        row = decision_row(asked, decision, model, fallback, tokens_in, tokens_out, cost, cascade,
                           self.service.live.policy.version, answer if self.store_text else None, self.store_text)
        self.store.record(row)
        if answer:
            self.describer.describe(row, answer)


class Answering:
    def __init__(self, handles: dict[str, DeploymentHandle], service: RoutingService, metrics: RouterMetrics,
                 cache: PolicyAnswerCache, recorder: DecisionRecorder, replica_id: str):
        self.handles, self.service, self.metrics = handles, service, metrics
        self.cache, self.recorder, self.replica_id = cache, recorder, replica_id

    async def whole(self, decision: Decision, generation: dict, policy, asked: RequestContext):
        """A non-streamed answer: (model, result, router_info, headers), or an error response."""
        key = self.cache.key(decision.model, generation, policy, asked.cache_control, streamed=False)
        cached, lookup = await self.cache.lookup(key, policy, asked.cache_control)
        if cached is None:
            outcome = await self._answer(decision, generation, policy)
            if isinstance(outcome, JSONResponse):
                return outcome
            model, result, failures, cascade = outcome
            if (writing := self.cache.keep(key, (model, result), policy)) is not None:
                await writing  # before the answer goes out, so that the client's next request finds it
        else:
            (model, result), failures, cascade = cached, [], []
        catalogue = self.service.catalogue  # the policy is the one the request was routed under
        logger.info("request %s: %s by %s (%s)%s", current_request_id(), decision.rule, model, decision.reason,
                    ", from the answer cache" if cached else "")
        tokens_in, tokens_out = result["input_tokens"], result["output_tokens"]
        cost = 0.0 if cached else catalogue.model(model).cost(tokens_in, tokens_out)
        if key is not None:
            self.metrics.cache_lookup(lookup)
        self.metrics.answered(model, decision, 0 if cached else tokens_in, 0 if cached else tokens_out, cost,
                              [(f.model, f.kind) for f in failures])
        fallback_reason = "; ".join(f.message for f in failures) or None
        self.recorder.record(asked, decision, model, fallback_reason, tokens_in, tokens_out, cost, cascade,
                             result["text"])
        cache = None if key is None else CACHE_HEADER[lookup]
        router_info = {**decision.as_dict(), "answered_by": model, "fallback": fallback_reason, "cascade": cascade,
                       "policy_version": policy.version, "cache": cache,
                       "model_latency_s": 0.0 if cached else round(result.get("latency_s", 0.0), 4)}
        headers = routing_headers(decision, policy.version, fallback_reason)
        if cache:
            headers["x-router-cache"] = cache
        headers["x-router-model"] = model
        headers["x-router-replica"] = self.replica_id  # which ingress replica answered (sessions, feedback)
        if cascade:
            headers["x-router-cascade"] = ",".join(f"{step['model']}:{step['mean_logprob']:.2f}" for step in cascade)
        return model, result, router_info, headers

    async def _answer(self, decision: Decision, generation: dict, policy):
        """Try the chosen model, then the next candidates, then the fallback. A failure or timeout moves on; so
        does a cascade escalation (an answer below the model's confidence floor, which is still paid for).
        Returns (model, result, failures, cascade steps), or an error response."""
        cascade, chain = [], fallback_chain(decision, policy)

        def confident(position: int, model: str, result: dict) -> bool:
            floor = policy.models[model].cascade_min_logprob
            if position + 1 < len(chain) and should_escalate(result.get("mean_logprob"), floor):
                cascade.append({"model": model, "mean_logprob": result["mean_logprob"], "min_logprob": floor,
                                "cost": self.service.catalogue.model(model).cost(result["input_tokens"],
                                                                                 result["output_tokens"])})
                self.metrics.escalated(model)
                return False
            return True

        def attempt(model: str):
            # a model with a cascade floor is asked for its confidence (a remote one gives it only when asked); each
            # attempt is stamped when it is made, so a fallback's wait is bounded from its own start
            judged = {**generation, "confidence": policy.models[model].cascade_min_logprob is not None}
            return self.handles[model].generate.remote(stamped(judged, policy.limits.max_queue_wait_s))

        outcome = await first_answer(chain, policy, attempt, confident)
        return outcome if isinstance(outcome, JSONResponse) else (*outcome, cascade)

    async def stream(self, decision: Decision, generation: dict, policy, asked: RequestContext, events):
        """A streamed answer with the nets of a plain one: the model's timeout_s bounds the wait for its first
        token, and a failure or timeout before it moves on along the same fallback chain. The headers go out once
        the answering model is known. After the first token a failure ends the stream with an error event.
        `events(deltas, model, on_failure, on_finish)` renders the endpoint's server-sent events. With the policy's
        cache on, a greedy stream that ended well is kept as its deltas, and the same request again replays them."""
        async def first_token(model: str):
            deltas = self.handles[model].options(stream=True).stream.remote(
                stamped(generation, policy.limits.max_queue_wait_s))
            try:
                return deltas, await deltas.__anext__()
            except StopAsyncIteration:
                return deltas, None
            except BaseException:  # a timeout cancels this wait: stop the model's generation too
                deltas.cancel()
                raise

        key = self.cache.key(decision.model, generation, policy, asked.cache_control, streamed=True)
        cached, lookup = await self.cache.lookup(key, policy, asked.cache_control)
        if cached is None:
            outcome = await first_answer(fallback_chain(decision, policy), policy, first_token)
            if isinstance(outcome, JSONResponse):
                return outcome
            model, (model_deltas, first), failures = outcome
            # kept only where the cache may keep this stream; otherwise the model's stream as it is
            deltas = RecordedDeltas(first, model_deltas) if key is not None else model_deltas
        else:
            (model, kept_deltas), first, failures = cached, None, []
            deltas = ReplayedDeltas(kept_deltas)
        fallback_reason = "; ".join(f.message for f in failures) or None
        logger.info("request %s: %s by %s, streamed (%s)%s", current_request_id(), decision.rule, model,
                    decision.reason, ", from the answer cache" if cached else "")
        if key is not None:
            self.metrics.cache_lookup(lookup)

        def failed(exc: Exception) -> None:
            logger.warning("request %s: %s failed mid-stream: %s", asked.request_id, model, exc)
            self.metrics.failed_mid_stream(model)
            self.recorder.record(asked, decision, model, f"{model} failed mid-stream: {type(exc).__name__}", 0, 0,
                                 0.0, None, "")

        def finished(tokens_in: int, tokens_out: int, text: str) -> None:
            cost = 0.0 if cached else self.service.catalogue.model(model).cost(tokens_in, tokens_out)
            self.metrics.answered(model, decision, 0 if cached else tokens_in, 0 if cached else tokens_out, cost,
                                  [(f.model, f.kind) for f in failures], stream=True)
            self.recorder.record(asked, decision, model, fallback_reason, tokens_in, tokens_out, cost, None, text)
            if cached is None and key is not None:  # only a stream that ended well, not a failed or abandoned one
                self.cache.keep(key, (model, deltas.kept), policy)  # a shared write goes on beside the last events

        headers = routing_headers(decision, policy.version, fallback_reason)
        if key is not None:
            headers["x-router-cache"] = CACHE_HEADER[lookup]
        headers["x-router-model"] = model
        headers["x-router-replica"] = self.replica_id  # which ingress replica answered (sessions, feedback)
        headers = shown_headers(headers, asked.disclose)
        return ModelStreamResponse(first, deltas, lambda all_deltas: events(all_deltas, model, failed, finished),
                                   media_type="text/event-stream", headers=headers)
