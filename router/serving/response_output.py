"""A routed answer in the Responses API's shapes (POST /v1/responses): a Response whose output is the answer's message
and its function calls, whole or as the API's stream of typed events."""
from __future__ import annotations

import json
import time
import uuid
from typing import AsyncIterator, Awaitable, Callable

from router.serving.responses import FunctionCallItem, InputMessage, ResponsesRequest


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": []}


def _message(item_id: str, text: str | None, status: str) -> dict:
    """The answer's text as an assistant message, with no content yet while in progress."""
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [] if text is None else [_text_part(text)]}


def _function_call(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def _item_status(status: str) -> str:
    return "incomplete" if status == "failed" else status  # an item is never "failed": its response is


def _response(response_id: str, model: str, body: ResponsesRequest, output: list[dict], status: str,
              usage: dict | None, incomplete: bool = False) -> dict:
    """A Response object, echoing the request's settings as OpenAI does."""
    choice = body.tool_choice.model_dump() if hasattr(body.tool_choice, "model_dump") else body.tool_choice
    return {"id": response_id, "object": "response", "created_at": time.time(), "status": status, "model": model,
            "output": output, "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
            "temperature": body.temperature, "top_p": body.top_p,
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "tool_choice": choice or ("auto" if body.tools else "none"),
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or []], "store": False, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None, "usage": usage,
            "text": {"format": (body.text.format.model_dump(by_alias=True, exclude_none=True)
                                if body.text and body.text.format else {"type": "text"})}}


def _usage(input_tokens: int, output_tokens: int) -> dict:
    return {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens}


def response_object(model: str, body: ResponsesRequest, text: str, finish_reason: str, input_tokens: int,
                    output_tokens: int, router: dict, tool_calls: list[dict] | None = None) -> dict:
    """A whole answer as a Response: its message (when it wrote text, or called nothing), then its function
    calls. Cut short by max_output_tokens, it is `incomplete`, as OpenAI says."""
    cut = finish_reason == "length"
    status = "incomplete" if cut else "completed"
    calls = [_function_call(_new_id("fc_"), c["id"], c["function"]["name"], c["function"]["arguments"], status)
             for c in tool_calls or []]
    output = ([_message(_new_id("msg_"), text, status)] if text or not calls else []) + calls
    return {**_response(body.response_id, model, body, output, status, _usage(input_tokens, output_tokens), cut),
            "router": router}


def input_item_objects(body: ResponsesRequest) -> list[dict]:
    """This request's input as the Responses API lists it (GET /v1/responses/{id}/input_items), each with an id."""
    out = []
    for item in body.input_items():
        if isinstance(item, InputMessage):
            part = _text_part(item.text()) if item.role == "assistant" else {"type": "input_text", "text": item.text()}
            out.append({"type": "message", "id": _new_id("msg_"), "status": "completed", "role": item.role,
                        "content": [part]})
        elif isinstance(item, FunctionCallItem):
            out.append(_function_call(_new_id("fc_"), item.call_id, item.name, item.arguments, "completed"))
        else:
            out.append({"type": "function_call_output", "id": _new_id("fco_"), "call_id": item.call_id,
                        "output": item.output, "status": "completed"})
    return out


def response_events(deltas: AsyncIterator[dict], model: str, body: ResponsesRequest,
                    on_failure: Callable[[Exception], None],
                    on_finish: Callable[[int, int, str], None],
                    on_complete: Callable[[dict], Awaitable[dict]] | None = None) -> AsyncIterator[str]:
    """A streamed answer as the Responses API's typed events: created; the message, added at its first text, with
    a delta per piece; each function call, added at its first piece, with a delta per piece of its arguments;
    then each item done and the response completed (or incomplete). A failure mid-stream sends an `error` event
    and `response.failed`, never a hung connection. on_failure and on_finish as sse_events's; on_complete(response)
    (stores it) gives the Response that the last event carries."""
    response_id, sequence = body.response_id, iter(range(1 << 30))

    def event(kind: str, **fields) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': next(sequence), **fields})}\n\n"

    async def events():
        yield event("response.created", response=_response(response_id, model, body, [], "in_progress", None))
        text, calls, message = [], {}, None  # calls: the model's call index -> its item, in output order
        outputs, tokens_in, tokens_out, finish = 0, 0, 0, "stop"

        def add_message():
            nonlocal message, outputs
            message, outputs = {"id": _new_id("msg_"), "output_index": outputs}, outputs + 1
            place = {"item_id": message["id"], "output_index": message["output_index"], "content_index": 0}
            return [event("response.output_item.added", output_index=place["output_index"],
                          item=_message(message["id"], None, "in_progress")),
                    event("response.content_part.added", **place, part=_text_part(""))]

        def items(status: str) -> list[dict]:
            found = [] if message is None else [(message["output_index"], _message(message["id"], "".join(text),
                                                                                   status))]
            found += [(c["output_index"], _function_call(c["id"], c["call_id"], c["name"], "".join(c["arguments"]),
                                                         status)) for c in calls.values()]
            return [item for _, item in sorted(found, key=lambda pair: pair[0])]

        try:
            async for delta in deltas:
                if delta["text"]:
                    for added in add_message() if message is None else []:
                        yield added
                    text.append(delta["text"])
                    yield event("response.output_text.delta", item_id=message["id"],
                                output_index=message["output_index"], content_index=0, delta=delta["text"],
                                logprobs=[])
                for piece in delta.get("tool_calls") or []:
                    function = piece.get("function") or {}
                    call = calls.get(piece.get("index", 0))
                    if call is None:
                        call = calls[piece.get("index", 0)] = {
                            "id": _new_id("fc_"), "output_index": outputs, "call_id": piece.get("id") or "",
                            "name": function.get("name") or "", "arguments": []}
                        outputs += 1
                        yield event("response.output_item.added", output_index=call["output_index"],
                                    item=_function_call(call["id"], call["call_id"], call["name"], "", "in_progress"))
                    if function.get("arguments"):
                        call["arguments"].append(function["arguments"])
                        yield event("response.function_call_arguments.delta", item_id=call["id"],
                                    output_index=call["output_index"], delta=function["arguments"])
                finish = delta["finish_reason"] or finish
                tokens_in, tokens_out = max(tokens_in, delta["input_tokens"]), max(tokens_out, delta["output_tokens"])
        except Exception as exc:  # a well-formed end, as OpenAI fails a response
            on_failure(exc)
            message_text = f"{model} failed mid-stream: {type(exc).__name__}: {str(exc)[:200]}"
            yield event("error", code="model_failed_mid_stream", message=message_text, param=None)
            failed = _response(response_id, model, body, items(_item_status("failed")), "failed", None)
            yield event("response.failed", response={**failed, "error": {"code": "server_error",
                                                                          "message": message_text}})
            return
        whole = "".join(text)
        on_finish(tokens_in, tokens_out or len(text), whole)
        cut = finish == "length"
        status = "incomplete" if cut else "completed"
        if message is None and not calls:  # a Response always has an output: the empty answer's message
            for added in add_message():
                yield added
        if message is not None:
            place = {"item_id": message["id"], "output_index": message["output_index"], "content_index": 0}
            yield event("response.output_text.done", **place, text=whole, logprobs=[])
            yield event("response.content_part.done", **place, part=_text_part(whole))
            yield event("response.output_item.done", output_index=message["output_index"],
                        item=_message(message["id"], whole, status))
        for call in calls.values():
            arguments = "".join(call["arguments"])
            yield event("response.function_call_arguments.done", item_id=call["id"],
                        output_index=call["output_index"], name=call["name"], arguments=arguments)
            yield event("response.output_item.done", output_index=call["output_index"],
                        item=_function_call(call["id"], call["call_id"], call["name"], arguments, status))
        final = _response(response_id, model, body, items(status), status, _usage(tokens_in, tokens_out or len(text)),
                          cut)
        yield event(f"response.{status}", response=await on_complete(final) if on_complete else final)

    return events()


def listed_items(items: list[dict], order: str, limit: int, after: str | None) -> dict:
    """One page of a stored response's input items, as OpenAI lists them (newest first unless order is asc).
    ValueError: `after` is no item of this response."""
    ordered = items if order == "asc" else items[::-1]
    if after is not None:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise ValueError(f"after: {after!r} is not an input item of this response")
        ordered = ordered[ids.index(after) + 1:]
    page = ordered[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(ordered) > limit}
