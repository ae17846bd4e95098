"""The Responses API's routes, one of the route groups RouterIngress is made of: a request answered as a chat (the
ingress's `_chat`), and the stored responses (`kept_responses`) retrieved, listed, continued and deleted."""
from __future__ import annotations

import asyncio
import logging
from typing import Literal

from fastapi import Query, Request
from fastapi.responses import JSONResponse

from router.serving.disclosure import shown_body
from router.serving.errors import current_request_id, error_response
from router.serving.http_api import api
from router.serving.response_output import input_item_objects, listed_items, response_events, response_object
from router.serving.responses import NOT_STORED, ResponsesRequest

logger = logging.getLogger("ray.serve")


class ResponsesEndpoints:
    """Needs the ingress's `_guard`, `_chat`, `_disclose` and `kept_responses` (a ResponseStore, or None)."""

    @api.post("/v1/responses")
    async def responses(self, body: ResponsesRequest, request: Request):
        """OpenAI's Responses API: the instructions and input as one chat, after the conversation of the stored
        response that previous_response_id names, routed and answered as a chat is; kept unless store is false.
        A chain of previous_response_id is one conversation for the session floor: its first response's id is its
        session, unless the client names one (x-session-id, user)."""
        if (denied := await self._guard(request)) is not None:
            return denied
        session = request.headers.get("x-session-id") or body.user
        if body.previous_response_id is not None:
            stored = await self._stored_response(body.previous_response_id)
            if isinstance(stored, JSONResponse):
                return stored
            try:
                body.continue_from(stored["conversation"])
            except ValueError as exc:
                return error_response(400, f"previous_response_id {body.previous_response_id!r}: its conversation "
                                           f"and this input together: {exc}", param="previous_response_id")
            session = session or stored["session_id"]
        session = session or body.response_id

        async def kept(response: dict) -> dict:
            if self.kept_responses is None or body.store is False:
                return response
            response = {**response, "store": True}
            try:
                await asyncio.to_thread(self.kept_responses.keep, response, input_item_objects(body),
                                        body.conversation_after(response["output"]), session)
            except Exception as exc:  # the answer still goes out, marked as not stored
                logger.error("request %s: response %s not stored: %s", current_request_id(), response["id"], exc)
                return {**response, "store": False}
            return response

        def whole(model: str, result: dict, router_info: dict) -> dict:
            return response_object(model, body, result["text"], result["finish_reason"], result["input_tokens"],
                                   result["output_tokens"], router_info, result.get("tool_calls"))

        def streamed(deltas, model: str, failed, finished):
            return response_events(deltas, model, body, failed, finished, kept)

        return await self._chat(body.chat, request, "responses", whole, streamed, kept, session)

    @api.api_route("/v1/responses/{response_id:path}", methods=["GET", "DELETE", "POST"])
    async def stored_response(self, response_id: str, request: Request, order: Literal["asc", "desc"] = "desc",
                              limit: int = Query(20, ge=1, le=100), after: str | None = None):
        """A stored response: retrieve it (GET), delete it (DELETE) or list its input items (GET .../input_items).
        Cancelling (POST .../cancel) is for background responses, which this router does not make."""
        if (denied := await self._guard(request)) is not None:
            return denied
        response_id, _, part = response_id.partition("/")
        if (request.method, part) not in {("GET", ""), ("DELETE", ""), ("GET", "input_items"), ("POST", "cancel")}:
            return error_response(404, f"{request.method} {request.url.path}: no such operation on a response")
        stored = await self._stored_response(response_id, "response_id")
        if isinstance(stored, JSONResponse):
            return stored
        if part == "cancel":
            return error_response(400, f"response {response_id!r} is complete: only a background response can be "
                                       "cancelled", param="response_id")
        if request.method == "DELETE":
            await asyncio.to_thread(self.kept_responses.delete, response_id)
            return {"id": response_id, "object": "response", "deleted": True}
        if part == "input_items":
            try:
                return listed_items(stored["input_items"], order, limit, after)
            except ValueError as exc:
                return error_response(400, str(exc), param="after")
        response = stored["response"]
        if "router" in response:  # what this client may see of the routing, not what its first client saw
            response["router"] = shown_body(response["router"], self._disclose(request))
        return response

    async def _stored_response(self, response_id: str, param: str = "previous_response_id"):
        """A stored response's row, or a 404 naming `param` (503 while the store cannot be read)."""
        try:
            kept = self.kept_responses
            stored = None if kept is None else await asyncio.to_thread(kept.get, response_id)
        except Exception as exc:
            logger.error("request %s: stored responses unreadable: %s", current_request_id(), exc)
            return error_response(503, f"stored responses cannot be read now ({type(exc).__name__}); retry later",
                                  "server_error", code="store_unavailable", headers={"retry-after": "2"})
        if stored is None:
            return error_response(404, f"response {response_id!r} {NOT_STORED}", param=param,
                                  code="response_not_found")
        return stored
