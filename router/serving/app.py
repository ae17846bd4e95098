"""The Ray Serve application: a FastAPI ingress that routes, plus one deployment per model.

`serve run serve_config.yaml` / `serve deploy serve_config.yaml` import `router.serving.app:build_app`.
The routing policy arrives as the ingress's user_config and is swapped live in `reconfigure`.
"""
import asyncio
import hmac
import logging
import os
import time
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from models.runtime_options import runtime_for
from models.yaml_source import ConfigError
from router.decision import apply_session_floor, blended_cost, tool_calling
from router.features import Encoder
from router.policy import DEFAULT_POLICY_PATH, load_policy
from router.service import RoutingService
from router.serving import replica
from router.serving.answer_cache import PolicyAnswerCache
from router.serving.answering import Answering, DecisionRecorder
from router.serving.budget import EscalationBudget
from router.serving.deciding import BatchedDecisions
from router.serving.describer import AnswerDescriber
from router.serving.disclosure import OPERATOR_HEADER, may_see_routing, routing_headers, shown_body, shown_headers
from router.serving.errors import current_request_id, error_response
from router.serving.feedback import FeedbackRequest, RequestContext
from router.serving.http_api import api
from router.serving.last_good import LastGoodPolicy
from router.serving.live import model_calls_of, switches_of
from router.serving.model_server import ModelServer
from router.serving.responses_api import ResponsesEndpoints
from router.serving.schemas import (MAX_ID_CHARS, MAX_TOKENS_CAP, ChatCompletionRequest, CompletionRequest,
                                    chat_completion, model_objects, text_completion)
from router.serving.specialist_api import SpecialistEndpoints
from router.serving.specialists import EmbeddingSpecialist, ModerationSpecialist
from router.serving.streaming import sse_events
from router.serving.telemetry import RouterMetrics
from router.store import URL_ENV, DecisionStore
from router.store.answers import SharedAnswers
from router.store.responses import ResponseStore

logger = logging.getLogger("ray.serve")
SESSION_TTL_S = 3600.0  # a conversation idle longer than this starts again from the cheapest tier


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
        # Responses API answers, for retrieval and previous_response_id: OpenAI's default, unless a request says no
        self.kept_responses = ResponseStore(self.store.engine) if store_responses else None
        self.metrics = RouterMetrics()
        # each client's recent requests on this replica (policy `escalation`); its refusals count in the metrics
        self.budget = EscalationBudget(self.metrics.refused_request)
        # 2 intra-op threads by default: the embedding is most of the decision (make bench times it)
        self.service = RoutingService(Encoder(threads=encoder_threads))
        self.decisions = BatchedDecisions(self.service, self.metrics)
        self.last_good = LastGoodPolicy(serve.get_replica_context().app_name)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        # each answer's embedding and toxicity, after it is sent, in batches on a lowest-priority thread
        describer = AnswerDescriber(lambda: self.embedder.encoder, self.moderator.probabilities, self.store.record)
        # prompts and answers can hold personal data: their text is stored only with store_text
        recorder = DecisionRecorder(self.store, describer, self.service, store_text, record_decisions)
        # the policy's `cache`: greedy answers given again, generating nothing (memory, or the store when shared)
        cache = PolicyAnswerCache(SharedAnswers(self.store.engine))
        self.answering = Answering(self.handles, self.service, self.metrics, cache, recorder, self.replica_id)
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
                "replica": self.replica_id,
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
        decision, error, _, _ = await self.decisions.decide(body)
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
        decision, error, embedded, shadow = await self.decisions.decide(body)
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
            return await self.answering.stream(decision, generation, policy, asked, streamed)
        answered = await self.answering.whole(decision, generation, policy, asked)
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
        decision, error, embedded, shadow = await self.decisions.decide(as_chat)
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
            return await self.answering.stream(decision, generation, policy, asked, lambda deltas, model, failed, finished:
                                      sse_events(deltas, model, True, failed, finished, body.include_usage()))
        answered = await self.answering.whole(decision, generation, policy, asked)
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
