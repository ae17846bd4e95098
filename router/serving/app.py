"""The Ray Serve application: a FastAPI ingress that routes, plus one deployment per model.

`serve run serve_config.yaml` / `serve deploy serve_config.yaml` import `router.serving.app:build_app`.
The routing policy arrives as the ingress's user_config and is swapped live in `reconfigure`.
"""
import asyncio
import contextvars
import hmac
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from models.runtime_options import runtime_for
from models.yaml_source import ConfigError
from router.decision import (NO_TOOL_CALLS, SUSPECTED_GADGET, Decision, apply_session_floor, blended_cost,
                             fallback_chain, should_escalate, tool_calling)
from router.features import Encoder
from router.policy import DEFAULT_POLICY_PATH, is_auto, load_policy, profile_of
from router.service import RouteRequest, RoutingService
from router.serving import replica
from router.serving.answer_cache import AnswerCache, RecordedDeltas, ReplayedDeltas, cache_directives, cache_key
from router.serving.budget import EscalationBudget
from router.serving.describer import AnswerDescriber
from router.serving.disclosure import OPERATOR_HEADER, may_see_routing, routing_headers, shown_body, shown_headers
from router.serving.errors import current_request_id, error_response
from router.serving.fallback import first_answer
from router.serving.feedback import FeedbackRequest, RequestContext, decision_row
from router.serving.http_api import api
from router.serving.last_good import LastGoodPolicy
from router.serving.live import model_calls_of, switches_of
from router.serving.model_server import ModelServer
from router.serving.queueing import stamped
from router.serving.responses_api import ResponsesEndpoints
from router.serving.schemas import (MAX_ID_CHARS, MAX_TOKENS_CAP, ChatCompletionRequest, CompletionRequest,
                                    chat_completion, model_objects, text_completion)
from router.serving.specialist_api import SpecialistEndpoints
from router.serving.specialists import EmbeddingSpecialist, ModerationSpecialist
from router.serving.streaming import ModelStreamResponse, sse_events
from router.serving.telemetry import RouterMetrics
from router.store import URL_ENV, DecisionStore
from router.store.answers import SharedAnswers
from router.store.responses import ResponseStore

logger = logging.getLogger("ray.serve")
DECISION_BATCH = 32  # most concurrent decisions that share one encoder call
SESSION_TTL_S = 3600.0  # a conversation idle longer than this starts again from the cheapest tier
# x-router-cache for each lookup result: a client sees a failed shared cache as a miss (the metrics tell them apart)
CACHE_HEADER = {"hit": "hit", "miss": "miss", "bypass": "bypass", "unavailable": "miss"}


# a decision that no model answers: its error code and the field at fault (else the input is too long)
REFUSALS = {SUSPECTED_GADGET: ("suspected_gadget", "messages"), NO_TOOL_CALLS: ("tool_calls_unsupported", "tools")}


def _running_replicas() -> dict[str, int] | None:
    """Running replicas per deployment of this app, from Serve's controller; None when it cannot say."""
    try:
        app = serve.status().applications[serve.get_replica_context().app_name]
        return {name: dep.replica_states.get("RUNNING", 0) for name, dep in app.deployments.items()}
    except Exception as exc:
        logger.warning("healthz: no replica states from Serve's controller (%s); asking each model", exc)
        return None


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64, max_queued_requests=256)
@serve.ingress(api)
class RouterIngress(ResponsesEndpoints, SpecialistEndpoints):
    def __init__(self, model_handles: dict[str, DeploymentHandle], encoder_threads: int = 2,
                 store_url: str | None = None, store_text: bool = False, record_decisions: bool = True,
                 model_calls: str = "grpc", store_responses: bool = True):
        # "grpc": calls to the models go over Serve's inter-deployment gRPC, not Ray actor calls, which cost each
        # answer's request path more (bench/model_transport.md); Serve's throughput mode does the same
        self.handles = {name: handle.options(_by_reference=model_calls == "actor")
                        for name, handle in model_handles.items()}
        self.embedder, self.moderator = EmbeddingSpecialist(), ModerationSpecialist()  # in-process: ms models
        # every answer, for /v1/feedback, monitoring and retraining; ROUTER_STORE_URL overrides the deployment's args
        self.store = DecisionStore(os.environ.get(URL_ENV) or store_url)
        self.store_text = store_text  # prompts and answers can hold personal data: off unless asked for
        self.record_decisions = record_decisions  # off only to measure what logging costs (make bench)
        # Responses API answers, for retrieval and previous_response_id: OpenAI's default, unless a request says no
        self.kept_responses = ResponseStore(self.store.engine) if store_responses else None
        # each answer's embedding and toxicity, after it is sent, in batches on a lowest-priority thread
        self.describer = AnswerDescriber(lambda: self.embedder.encoder, self.moderator.probabilities,
                                         self.store.record)
        self.metrics = RouterMetrics()
        self.answers = AnswerCache()  # the policy's `cache`: greedy answers given again, generating nothing
        self.shared_answers = SharedAnswers(self.store.engine)  # the same, for every replica, with `cache.shared`
        # each client's recent requests on this replica (policy `escalation`); its refusals count in the metrics
        self.budget = EscalationBudget(self.metrics.refused_request)
        # 2 intra-op threads by default: the embedding is most of the decision (make bench times it)
        self.service = RoutingService(Encoder(threads=encoder_threads))
        # decisions run here, one at a time (the encoder already uses the cores), never on the event loop:
        # an embedding there would stall every other request of this replica, /healthz included
        self.decider = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decide")
        self.last_good = LastGoodPolicy(serve.get_replica_context().app_name)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        replica.register(self)

    def reconfigure(self, user_config: dict) -> None:
        """A new policy from the user_config. Valid: it goes live and is kept as the last good one. Refused: the
        old one keeps serving; at a replica's start (when Serve restarts it with a refused edit) the last good
        policy serves. With no last good policy, a refused first policy stops the deployment from starting."""
        data = (user_config or {}).get("policy")
        outcome, policy = self.service.take(data, self.last_good.load)
        if outcome == "applied":
            self.last_good.save(data)
            logger.info("policy %s is live", policy.version)
        elif outcome == "refused":
            logger.error("policy edit refused, keeping version %s:\n%s", policy.version, self.service.last_error)
        else:
            logger.error("POLICY REFUSED AT START: the user_config's policy is invalid, so this replica serves the "
                         "last good policy %s. Deploy a valid policy to clear this.\n%s", policy.version,
                         self.service.last_error)
        self.metrics.policy_refused(self.service.refused is not None)
        self._take_shadow((user_config or {}).get("shadow_policy"))

    def _take_shadow(self, data) -> None:
        """A candidate policy from user_config.shadow_policy: its decisions are stored, never served. A refused
        one leaves the earlier shadow in place; the live policy is never touched."""
        try:
            shadow = self.service.apply_shadow(data)
        except ConfigError:
            logger.error("shadow policy refused:\n%s", self.service.shadow_refused.message)
            return
        if shadow is not None:
            logger.info("shadow policy %s decides beside the live one (stored, never served)", shadow.version)

    def _shadow_version(self) -> str | None:
        shadow = self.service.shadow
        return shadow.policy.version if shadow else None

    # --- routes -------------------------------------------------------------------------------------------
    @api.get("/healthz")
    async def healthz(self):
        """Ready when every model deployment has a running replica; 503 with the ones that have none. Serve's
        controller says so, not a call into each model: under load such a call queues behind the answers, and a
        busy ensemble would look dead to a load balancer."""
        deployments = self.handles  # the specialists live in this replica: it answering means they are loaded
        running = await asyncio.to_thread(_running_replicas)
        if running is not None:
            not_ready = [name for name in deployments if running.get(name, 0) < 1]
        else:  # no answer from the controller: ask each deployment
            not_ready = []
            for name, handle in deployments.items():
                try:
                    await asyncio.wait_for(handle.ready.remote(), timeout=5)
                except Exception:
                    not_ready.append(name)
        refused = self.service.refused
        body = {"status": "ok" if not not_ready else "loading", "policy_version": self.service.live.policy.version,
                "refused_policy_version": refused.version if refused else None, "policy_refused": refused is not None,
                "models": list(self.handles), "not_ready": not_ready}
        return JSONResponse(body, status_code=503 if not_ready else 200)

    async def _guard(self, request: Request) -> JSONResponse | None:
        """Access and size checks from the live policy; None when the request may go on."""
        live = self.service.live.policy
        key = self._api_key(live)
        if key is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
                return error_response(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                              "authentication_error", code="invalid_api_key")
        length = request.headers.get("content-length")
        size = int(length) if length else len(await request.body())  # a chunked body has no content-length
        if size > live.limits.max_body_bytes:
            return error_response(413, f"request body of {size} bytes exceeds the limit of {live.limits.max_body_bytes}")
        for header in ("x-request-id", "x-session-id"):  # both are kept in the store's 200-character columns
            value = request.headers.get(header)
            if value is not None and not 0 < len(value) <= MAX_ID_CHARS:
                return error_response(400, f"{header} must have at least 1 and at most {MAX_ID_CHARS} characters, not "
                                   f"{len(value)}", param=header)
        return None

    def _disclose(self, request: Request) -> bool:
        """Whether this client may see scores and reasons (policy access.disclose_routing, the operator key)."""
        return may_see_routing(self.service.live.policy.access, request.headers.get(OPERATOR_HEADER))

    def _api_key(self, policy) -> str | None:
        path = policy.access.api_key_file
        if path:
            try:
                return Path(path).read_text().strip() or None
            except OSError:
                logger.error("cannot read api_key_file %s; refusing requests until it is readable", path)
                return "\0unreadable"  # no client can send this
        return os.environ.get("ROUTER_API_KEY") or None

    @api.get("/v1/models")
    async def list_models(self, request: Request):
        if (denied := await self._guard(request)) is not None:
            return denied
        return {"object": "list", "data": model_objects(self.service.live.policy)}

    @api.get("/v1/models/{model_id:path}")
    async def retrieve_model(self, model_id: str, request: Request):
        """OpenAI's `models.retrieve`: one model object, or a 404 as OpenAI's."""
        if (denied := await self._guard(request)) is not None:
            return denied
        objects = model_objects(self.service.live.policy)
        found = next((m for m in objects if m["id"] == model_id), None)
        return found or error_response(404, f"model {model_id!r} does not exist; the models are {[m['id'] for m in objects]}",
                               param="model", code="model_not_found")

    @api.get("/v1/policy")
    def policy(self, request: Request) -> dict:
        """The live policy and any refused edit; with routing withheld, only the operator sees the policy itself."""
        live = self.service.live
        refused = self.service.refused
        body = {"version": live.policy.version, "applied_at": live.applied_at, "replica_pid": os.getpid(),
                "replica": serve.get_replica_context().replica_id.unique_id,
                "policy": live.policy.model_dump(mode="json"), "last_rejected_edit": self.service.last_error,
                "refused_edit": refused.as_dict() if refused else None, "shadow_policy_version": self._shadow_version(),
                "refused_shadow": self.service.shadow_refused.as_dict() if self.service.shadow_refused else None}
        if not self._disclose(request):
            body.pop("policy")
        return body

    def _answering_policy(self, body: ChatCompletionRequest):
        """(the live policy a request is answered under, None): for one with tools, only the models that make tool
        calls answer and are fallen back on. (None, a 400) when none does (an edit since the decision)."""
        policy = self.service.live.policy
        callers = tool_calling(policy, self.service.catalogue) if body.needs_tool_calls() else policy
        return (callers, None) if callers is not None else \
            (None, error_response(400, "no model this policy serves makes tool calls", param="tools",
                          code="tool_calls_unsupported"))

    @api.post("/v1/route")
    async def route(self, body: ChatCompletionRequest, request: Request):
        if (denied := await self._guard(request)) is not None:
            return denied
        decision, error, _, _ = await self._decide(body)
        if error is not None:
            return error
        policy, error = self._answering_policy(body)  # what an answer would get; asking counts in no budget
        if error is not None:
            return error
        decision, refused = self.budget.check(decision, request, body.user, policy, record=False)
        if refused is not None:
            return refused
        disclose = self._disclose(request)
        return JSONResponse(shown_body({**decision.as_dict(), "policy_version": self.service.live.policy.version},
                                       disclose),
                            headers=shown_headers(routing_headers(decision, self.service.live.policy.version), disclose))

    @api.post("/v1/chat/completions")
    async def chat_completions(self, body: ChatCompletionRequest, request: Request):
        if (denied := await self._guard(request)) is not None:
            return denied

        def whole(model: str, result: dict, router_info: dict) -> dict:
            return chat_completion(model, result["text"], result["finish_reason"], result["input_tokens"],
                                   result["output_tokens"], router_info, result.get("logprobs"), result.get("tool_calls"))

        def streamed(deltas, model: str, failed, finished):
            return sse_events(deltas, model, False, failed, finished, body.include_usage())

        return await self._chat(body, request, "chat.completions", whole, streamed)

    async def _chat(self, body: ChatCompletionRequest, request: Request, endpoint: str, whole, streamed, kept=None,
                    session: str | None = None):
        """A chat's route, answer and record, shared by the endpoints that carry one: `whole(model, result,
        router_info)` renders a whole answer's body, `streamed(deltas, model, on_failure, on_finish)` a stream's
        server-sent events, and `await kept(body)` (when given) stores a whole answer's body before it goes out.
        `session`: the conversation, when the endpoint knows it; else x-session-id or the body's user. The caller
        has passed the access and size checks (`_guard`)."""
        decision, error, embedded, shadow = await self._decide(body)
        if error is not None:
            return error
        (policy, error), catalogue = self._answering_policy(body), self.service.catalogue
        if error is not None:
            return error
        session = session or request.headers.get("x-session-id") or body.user
        asked = RequestContext(current_request_id(), body.routing_text(), endpoint, session, *embedded,
                               shadow=shadow, shadow_version=self._shadow_version(), disclose=self._disclose(request),
                               cache_control=request.headers.get("cache-control"))
        if session:  # the costliest model this conversation has used, on any ingress replica (the store)
            used = await self._session_models(session)
            floor = max((m for m in used if m in policy.models), key=lambda m: blended_cost(m, policy, catalogue),
                        default=None)
            decision = apply_session_floor(decision, floor, policy, catalogue)
        decision, refused = self.budget.check(decision, request, body.user, policy, record=True)
        if refused is not None:
            return refused
        generation = {"messages": body.as_plain_messages(), "logprobs": body.asked_logprobs(),
                      "response_format": body.response_format and body.response_format.as_request(),
                      "max_tokens": min(body.output_budget(), policy.limits.max_output_tokens), **body.sampling(),
                      **body.tool_fields()}
        if body.stream:
            return await self._stream(decision, generation, policy, asked, streamed)
        answered = await self._complete(decision, generation, policy, asked)
        if isinstance(answered, JSONResponse):
            return answered
        model, result, router_info, headers = answered
        payload = whole(model, result, shown_body(router_info, asked.disclose))
        return JSONResponse(await kept(payload) if kept else payload, headers=shown_headers(headers, asked.disclose))

    @api.post("/v1/completions")
    async def completions(self, body: CompletionRequest, request: Request):
        """Legacy text completion, routed on the prompt like a one-message chat."""
        if (denied := await self._guard(request)) is not None:
            return denied
        as_chat = ChatCompletionRequest(model=body.model, messages=[{"role": "user", "content": body.prompt}],
                                        max_tokens=min(body.max_tokens, MAX_TOKENS_CAP))
        decision, error, embedded, shadow = await self._decide(as_chat)
        if error is not None:
            return error
        policy = self.service.live.policy
        decision, refused = self.budget.check(decision, request, body.user, policy, record=True)
        if refused is not None:
            return refused
        asked = RequestContext(current_request_id(), body.prompt, "completions", None, *embedded, shadow=shadow,
                               shadow_version=self._shadow_version(), disclose=self._disclose(request),
                               cache_control=request.headers.get("cache-control"))
        generation = {"messages": [], "prompt": body.prompt, "logprobs": body.logprobs,
                      "max_tokens": min(body.max_tokens, policy.limits.max_output_tokens), **body.sampling()}
        if body.stream:
            return await self._stream(decision, generation, policy, asked, lambda deltas, model, failed, finished:
                                      sse_events(deltas, model, True, failed, finished, body.include_usage()))
        answered = await self._complete(decision, generation, policy, asked)
        if isinstance(answered, JSONResponse):
            return answered
        model, result, router_info, headers = answered
        return JSONResponse(text_completion(model, result["text"], result["finish_reason"], result["input_tokens"],
                                            result["output_tokens"], shown_body(router_info, asked.disclose),
                                            result.get("logprobs")),
                            headers=shown_headers(headers, asked.disclose))

    async def _session_models(self, session: str) -> set[str]:
        """The models this conversation used lately; none when the store fails, so that an outage of the
        database costs the session floor, not the answer."""
        try:
            return await asyncio.to_thread(self.store.session_models, session, time.time() - SESSION_TTL_S)
        except Exception as exc:
            logger.warning("session %s: the decision store failed, so no session floor applies: %s", session, exc)
            return set()

    @api.post("/v1/feedback")
    async def feedback(self, body: FeedbackRequest, request: Request):
        """A verdict on an earlier answer, named by the x-request-id it carried, stored beside its decision.
        Rating the same request again replaces the earlier rating."""
        if (denied := await self._guard(request)) is not None:
            return denied
        try:
            decision = await asyncio.to_thread(self.store.decision, body.request_id)
            if decision is not None:
                await asyncio.to_thread(self.store.rate, body.request_id, body.normalised_score(),
                                        body.rating_label(), body.comment, body.metadata)
        except Exception as exc:  # a database outage: say so, and let the client retry the rating later
            logger.error("feedback %s: the decision store failed: %s", body.request_id, exc)
            return error_response(503, f"the decision store is unavailable, so the rating was not kept "
                               f"({type(exc).__name__}); retry later", type_="server_error", code="store_unavailable")
        if decision is None:
            return error_response(404, f"request id {body.request_id!r} is unknown: no answer with it is in the decision "
                               f"store", param="request_id", code="request_not_found")
        score = body.normalised_score()
        self.metrics.feedback(decision["model"], score)
        return JSONResponse({"object": "feedback", "request_id": body.request_id, "model": decision["model"],
                             "rule": decision["rule"], "score": score, "rating": body.rating_label()},
                            headers={"x-router-replica": self.replica_id})

    # --- helpers -------------------------------------------------------------------------------------------
    async def _complete(self, decision: Decision, generation: dict, policy, asked: RequestContext):
        """A non-streamed answer and what every one shares: the log line, metrics, the decision store row,
        the body's router block and the x-router-* headers. Returns (model, result, router_info, headers), or an
        error response."""
        key = self._cache_key(decision, generation, policy, asked, streamed=False)
        cached, lookup = await self._cached(key, policy, asked)
        if cached is None:
            outcome = await self._answer(decision, generation, policy)
            if isinstance(outcome, JSONResponse):
                return outcome
            model, result, failures, cascade = outcome
            if (writing := self._keep(key, (model, result), policy)) is not None:
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
        self._record(asked, decision, model, fallback_reason, tokens_in, tokens_out, cost, cascade, result["text"])
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

    @staticmethod
    def _cache_key(decision: Decision, generation: dict, policy, asked: RequestContext, streamed: bool):
        """The request's answer-cache key; None with the cache off, or when the client's Cache-Control says
        no-store."""
        if not policy.cache.enabled or not cache_directives(asked.cache_control)[1]:
            return None
        return cache_key(decision.model, generation, policy.version, streamed)

    async def _cached(self, key: str | None, policy, asked: RequestContext) -> tuple:
        """(the answer kept under `key`, as (model, result or a stream's deltas), or None; the lookup's result for
        the metrics: hit, miss, bypass (the client's Cache-Control said no-cache) or unavailable), from this
        replica's memory or, with the policy's `cache.shared`, from the database, where a failure is only a
        miss to the client."""
        if key is None:
            return None, None
        if not cache_directives(asked.cache_control)[0]:
            return None, "bypass"
        if not policy.cache.shared:
            found = self.answers.get(key, policy.cache.ttl_s)
        else:
            try:
                found = await asyncio.to_thread(self.shared_answers.get, key, policy.cache.ttl_s)
            except Exception as exc:
                logger.warning("the shared answer cache could not be read, so this request is a miss: %s", exc)
                return None, "unavailable"
        return found, "miss" if found is None else "hit"

    def _keep(self, key: str | None, answer: tuple, policy):
        """Keep an answer where the policy's cache lives: this replica's memory, or with `cache.shared` the
        database, written off the event loop (the write's future is returned)."""
        if key is None:
            return None
        if not policy.cache.shared:
            return self.answers.put(key, answer, policy.cache.max_entries)
        return asyncio.get_running_loop().run_in_executor(None, self._keep_shared, key, answer, policy)

    def _keep_shared(self, key: str, answer: tuple, policy) -> None:
        try:
            self.shared_answers.put(key, answer, policy.cache.ttl_s, policy.cache.max_entries)
        except Exception as exc:  # a database outage costs the cache, never the answer
            logger.warning("the shared answer cache could not keep an answer: %s", exc)

    def _record(self, asked: RequestContext, decision: Decision, model: str | None, fallback: str | None,
                tokens_in: int, tokens_out: int, cost: float, cascade: list | None, answer: str) -> None:
        if not self.record_decisions:
            return
        row = decision_row(asked, decision, model, fallback, tokens_in, tokens_out, cost, cascade,
                           self.service.live.policy.version, answer if self.store_text else None, self.store_text)
        self.store.record(row)
        if answer:  # off the request path: the answer's embedding and toxicity join its row when ready
            self.describer.describe(row, answer)

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

    async def _decide(self, body: ChatCompletionRequest):
        """(decision, None, (prompt embedding, its encoder's name), shadow decision), or (None, an error response,
        None, None). The decision runs on the decision thread, never on the event loop, batched with the requests
        that arrived while the previous batch ran; each request's context (its id reaches the logs) goes with it."""
        return await self._decide_batch((body, contextvars.copy_context()))

    # no wait for a batch to fill: one request alone goes at once, requests that queue behind a batch share the next
    @serve.batch(max_batch_size=DECISION_BATCH, batch_wait_timeout_s=0.0)
    async def _decide_batch(self, items: list[tuple[ChatCompletionRequest, contextvars.Context]]) -> list[tuple]:
        return await asyncio.get_running_loop().run_in_executor(self.decider, self._decide_all, items)

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
            return error_response(404, f"model {body.model!r} does not exist: the policy has no profile {profile!r}; its "
                               f"profiles are {profiles}", param="model", code="model_not_found"), 0
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

    async def _stream(self, decision: Decision, generation: dict, policy, asked: RequestContext, events):
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

        key = self._cache_key(decision, generation, policy, asked, streamed=True)
        cached, lookup = await self._cached(key, policy, asked)
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
            self._record(asked, decision, model, f"{model} failed mid-stream: {type(exc).__name__}", 0, 0, 0.0,
                         None, "")

        def finished(tokens_in: int, tokens_out: int, text: str) -> None:
            cost = 0.0 if cached else self.service.catalogue.model(model).cost(tokens_in, tokens_out)
            self.metrics.answered(model, decision, 0 if cached else tokens_in, 0 if cached else tokens_out, cost,
                                  [(f.model, f.kind) for f in failures], stream=True)
            self._record(asked, decision, model, fallback_reason, tokens_in, tokens_out, cost, None, text)
            if cached is None and key is not None:  # only a stream that ended well, not a failed or abandoned one
                self._keep(key, (model, deltas.kept), policy)  # a shared write goes on beside the last events

        headers = routing_headers(decision, policy.version, fallback_reason)
        if key is not None:
            headers["x-router-cache"] = CACHE_HEADER[lookup]
        headers["x-router-model"] = model
        headers["x-router-replica"] = self.replica_id  # which ingress replica answered (sessions, feedback)
        headers = shown_headers(headers, asked.disclose)
        return ModelStreamResponse(first, deltas, lambda all_deltas: events(all_deltas, model, failed, finished),
                                    media_type="text/event-stream", headers=headers)


def build_app(args: dict[str, Any] | None = None):
    """Application builder. args: models (names; default the whole catalogue), runtime (llama.cpp options) and
    runtime_per_model (a model's own options over them),
    policy_file (used when the config gives no user_config; default: the policy in serve_config.yaml),
    encoder_threads (the router's embedding threads, default 2), store_url (the decision store; the environment
    variable ROUTER_STORE_URL overrides it; default a SQLite file under ~/.cache/ensemble-router/), store_text
    (keep prompt and answer text in the store; default off), record_decisions (default on; off, no answer reaches
    the store, so feedback and sessions cannot find it: for measuring what logging costs), model_calls (how the
    ingress calls the models: "grpc", the default, or "actor", Serve's default handle calls), store_responses
    (keep Responses API answers for previous_response_id; default on)."""
    from models.catalogue import load_catalogue

    args = args or {}
    try:
        model_calls = model_calls_of(args)
    except ValueError as exc:
        raise ValueError(f"args.model_calls: {exc}") from None
    switches = switches_of(args)
    names = args.get("models") or load_catalogue().names()
    handles = {name: ModelServer.options(name=name).bind(name, runtime_for(args, name)) for name in names}
    policy = load_policy(args.get("policy_file") or DEFAULT_POLICY_PATH)
    ingress = RouterIngress.options(user_config={"policy": policy.model_dump(mode="json", exclude_defaults=False)})
    return ingress.bind(handles, int(args.get("encoder_threads", 2)), args.get("store_url"),
                        switches["store_text"], switches["record_decisions"], model_calls,
                        switches["store_responses"])
