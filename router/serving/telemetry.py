"""Prometheus metrics of the routing path, through ray.serve.metrics (exported on Ray's metrics endpoint,
where Ray prefixes each name with `ray_`). The names are a contract with dashboards: tests pin them."""
from __future__ import annotations

from ray.serve import metrics

from router.decision import Decision

NAMES = {
    "decision_latency": "router_decision_latency_ms",
    "requests": "router_requests",
    "fallbacks": "router_fallbacks",
    "confidence": "router_classifier_confidence",
    "cost": "router_cost_dollars",
    "tokens": "router_tokens",
    "escalations": "router_cascade_escalations",
    "feedback": "router_feedback",
    "policy_refused": "router_policy_refused",
    "decision_batch": "router_decision_batch_size",
    "refusals": "router_refusals",
    "cache": "router_answer_cache",
}


class RouterMetrics:
    def __init__(self):
        self.decision_latency = metrics.Histogram(
            NAMES["decision_latency"], "time to route one request (features, classifier, policy), ms",
            boundaries=[1, 2, 3, 5, 8, 13, 21, 34, 55, 100])
        self.decision_batch = metrics.Histogram(
            NAMES["decision_batch"], "requests decided together in one encoder call (concurrent requests batch)",
            boundaries=[1, 2, 4, 8, 16, 32])
        self.requests = metrics.Counter(NAMES["requests"], "requests by the model that answered, the rule, whether "
                                        "the answer was streamed, and the policy profile asked for (none: plain auto "
                                        "or a named model)", tag_keys=("model", "rule", "stream", "profile"))
        self.fallbacks = metrics.Counter(NAMES["fallbacks"], "answers that came from a later candidate, by reason",
                                         tag_keys=("model", "reason"))
        self.confidence = metrics.Histogram(NAMES["confidence"], "predicted P(adequate) per model",
                                            boundaries=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                                            tag_keys=("model",))
        self.cost = metrics.Counter(NAMES["cost"], "cost of answers by model, catalogue prices", tag_keys=("model",))
        self.tokens = metrics.Counter(NAMES["tokens"], "tokens in and out by model", tag_keys=("model", "direction"))
        self.escalations = metrics.Counter(NAMES["escalations"], "cascade escalations, by the model that was not "
                                           "confident enough", tag_keys=("model",))
        self.feedback_count = metrics.Counter(NAMES["feedback"], "feedback on answers, by the model that answered "
                                              "and the verdict (score >= 0.5 is good)", tag_keys=("model", "verdict"))

        self.refusals = metrics.Counter(NAMES["refusals"], "requests the policy refused, by error code: the gadget "
                                        "guard (suspected_gadget), the escalation budget, input too long",
                                        tag_keys=("code",))
        self.cache = metrics.Counter(NAMES["cache"], "answer cache lookups (policy cache on; greedy requests), by "
                                     "result: hit, miss, bypass (the client's Cache-Control: no-cache), or unavailable "
                                     "(the shared cache's database failed: a miss)",
                                     tag_keys=("result",))
        self.refused = metrics.Gauge(NAMES["policy_refused"], "1 while a refused policy edit is pending (the live "
                                     "policy is not the one Serve holds); 0 once a valid edit is live")

    def cache_lookup(self, result: str) -> None:
        self.cache.inc(tags={"result": result})

    def refused_request(self, code: str) -> None:
        self.refusals.inc(tags={"code": code})

    def policy_refused(self, refused: bool) -> None:
        self.refused.set(1 if refused else 0)

    def feedback(self, model: str, score: float) -> None:
        self.feedback_count.inc(tags={"model": model, "verdict": "good" if score >= 0.5 else "bad"})

    def failed_mid_stream(self, model: str) -> None:
        self.fallbacks.inc(tags={"model": model, "reason": "mid_stream"})

    def escalated(self, model: str) -> None:
        self.escalations.inc(tags={"model": model})

    def batched(self, size: int) -> None:
        self.decision_batch.observe(size)

    def decided(self, latency_ms: float, scores: dict[str, float]) -> None:
        self.decision_latency.observe(latency_ms)
        for model, p in scores.items():
            self.confidence.observe(p, tags={"model": model})

    def answered(self, model: str, decision: Decision, input_tokens: int, output_tokens: int, cost: float,
                 failures: list[tuple[str, str]], stream: bool = False) -> None:
        """failures: (model, kind) of each candidate that did not answer first; kind is timeout, error or refused."""
        self.requests.inc(tags={"model": model, "rule": decision.rule, "stream": "true" if stream else "false",
                                "profile": decision.profile or "none"})
        # Ray's Counter.inc refuses values <= 0 (an empty answer has 0 output tokens): skip those
        if input_tokens > 0:
            self.tokens.inc(input_tokens, tags={"model": model, "direction": "in"})
        if output_tokens > 0:
            self.tokens.inc(output_tokens, tags={"model": model, "direction": "out"})
        if cost > 0:
            self.cost.inc(cost, tags={"model": model})
        for failed, kind in failures:
            self.fallbacks.inc(tags={"model": failed, "reason": kind})
