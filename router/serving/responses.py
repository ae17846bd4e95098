"""OpenAI's Responses API (POST /v1/responses) over the chat route: the request's instructions and input become one
chat conversation, routed and answered as a chat is, and the answer goes back as a Response, whole or as its stream
of typed events. Nothing is stored, so a response cannot be continued by its id."""
from __future__ import annotations

import json
import time
import uuid
from typing import AsyncIterator, Callable, Literal

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, StrictFloat, StrictInt, ValidationError,
                      ValidationInfo, field_validator, model_validator)
from pydantic_core import PydanticCustomError

from router.serving.schemas import (FIELD_ERROR, MAX_ID_CHARS, MAX_MESSAGES, MAX_TOKENS_CAP, ChatCompletionRequest,
                                    ContentPart, JsonBody, JsonSchema, refuse_unsupported)

TEXT_PARTS = {"input_text", "output_text"}  # what a message item's content list may hold: the models read text
NOT_STORED = "responses are not stored here, so none can be continued: send the whole conversation in input"
UNSUPPORTED = {"previous_response_id": (bool, NOT_STORED), "conversation": (bool, NOT_STORED),
               "tools": (bool, "tools on /v1/responses are not supported: use /v1/chat/completions, which routes a "
                               "request with tools to a model that makes tool calls"),
               "background": (bool, "background responses are not supported: nothing is stored to poll")}


class InputMessage(BaseModel):
    """One item of `input`: a message. Other items (function calls and their outputs, reasoning) are refused."""
    model_config = ConfigDict(extra="ignore")
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        for part in self.content:
            if part.type not in TEXT_PARTS:
                raise ValueError(f"content part type {part.type!r} is not supported: the models read text only")
        return "\n".join(part.text or "" for part in self.content)


class TextFormat(BaseModel):
    """`text.format`: plain text, any JSON object, or JSON of a schema (the chat's response_format, flattened)."""
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    json_schema: JsonSchema = Field(None, alias="schema")
    strict: StrictBool | None = None

    @model_validator(mode="after")
    def _a_named_schema(self):
        if (self.type == "json_schema") != (self.name is not None):
            raise ValueError("name is required with type 'json_schema', and only with it")
        return self

    def as_response_format(self) -> dict:
        if self.type != "json_schema":
            return {"type": self.type}
        spec = {"name": self.name, "schema": self.json_schema, "strict": self.strict}
        return {"type": "json_schema", "json_schema": {k: v for k, v in spec.items() if v is not None}}


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")
    format: TextFormat | None = None


class ResponsesRequest(JsonBody):
    """The Responses API's fields that a chat can carry; the stored-state and tool fields are refused by name."""
    model_config = ConfigDict(extra="ignore")
    model: str = Field("auto", min_length=1)
    input: str | list[InputMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    instructions: str | None = None
    max_output_tokens: StrictInt | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    temperature: StrictFloat = Field(1.0, ge=0.0, le=2.0)
    top_p: StrictFloat = Field(1.0, gt=0.0, le=1.0)
    stream: StrictBool = False
    user: str | None = Field(None, max_length=MAX_ID_CHARS)
    text: TextConfig | None = None
    store: StrictBool | None = None  # accepted and ignored: nothing is stored (NOT_STORED)
    previous_response_id: str | None = None
    conversation: str | dict | None = None
    tools: list | None = None
    background: StrictBool | None = None

    _chat: ChatCompletionRequest | None = PrivateAttr(None)

    @field_validator(*UNSUPPORTED)
    @classmethod
    def _nothing_unsupported(cls, value, info: ValidationInfo):
        return refuse_unsupported(UNSUPPORTED, info.field_name, value)

    @model_validator(mode="after")
    def _a_chat(self):
        """What the chat refuses is this body's input's fault, named so."""
        try:
            self._chat = self._as_chat()
        except ValidationError as exc:
            raise PydanticCustomError(FIELD_ERROR, "{field}: {why}", {"field": "input", "why": "; ".join(
                e["msg"].removeprefix("Value error, ") for e in exc.errors())}) from None
        except ValueError as exc:
            raise PydanticCustomError(FIELD_ERROR, "{field}: {why}", {"field": "input", "why": str(exc)}) from None
        return self

    @property
    def chat(self) -> ChatCompletionRequest:
        return self._chat

    def _as_chat(self) -> ChatCompletionRequest:
        """The same request as a chat: the instructions as its system message, then the input's messages."""
        items = [InputMessage(role="user", content=self.input)] if isinstance(self.input, str) else self.input
        messages = ([{"role": "system", "content": self.instructions}] if self.instructions else []) + \
            [{"role": item.role, "content": item.text()} for item in items]
        fmt = self.text.format if self.text else None
        return ChatCompletionRequest(
            model=self.model, messages=messages, max_completion_tokens=self.max_output_tokens,
            temperature=self.temperature, top_p=self.top_p, stream=self.stream, user=self.user,
            response_format=fmt.as_response_format() if fmt else None)


def _ids() -> tuple[str, str]:
    hexed = uuid.uuid4().hex
    return "resp_" + hexed[:24], "msg_" + hexed[8:32]


def _text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": []}


def _message(message_id: str, text: str | None, status: str) -> dict:
    """The one output item: an assistant message, with no content yet while in progress."""
    return {"type": "message", "id": message_id, "status": status, "role": "assistant",
            "content": [] if text is None else [_text_part(text)]}


def _response(response_id: str, message_id: str, model: str, body: ResponsesRequest, text: str | None,
              status: str, usage: dict | None, incomplete: bool = False) -> dict:
    """A Response object: one assistant message holding the answer's text (none yet while in progress)."""
    # a message is never "failed": its response is
    output = [] if text is None else [_message(message_id, text, "incomplete" if status == "failed" else status)]
    return {"id": response_id, "object": "response", "created_at": time.time(), "status": status, "model": model,
            "output": output, "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
            "temperature": body.temperature, "top_p": body.top_p, "parallel_tool_calls": False, "tool_choice": "none",
            "tools": [], "store": False, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None, "usage": usage,
            "text": {"format": (body.text.format.model_dump(by_alias=True, exclude_none=True)
                                if body.text and body.text.format else {"type": "text"})}}


def _usage(input_tokens: int, output_tokens: int) -> dict:
    return {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens}


def response_object(model: str, body: ResponsesRequest, text: str, finish_reason: str, input_tokens: int,
                    output_tokens: int, router: dict) -> dict:
    """A whole answer as a Response; cut short by max_output_tokens, it is `incomplete`, as OpenAI says."""
    cut = finish_reason == "length"
    return {**_response(*_ids(), model, body, text, "incomplete" if cut else "completed",
                        _usage(input_tokens, output_tokens), cut), "router": router}


def response_events(deltas: AsyncIterator[dict], model: str, body: ResponsesRequest,
                    on_failure: Callable[[Exception], None],
                    on_finish: Callable[[int, int, str], None]) -> AsyncIterator[str]:
    """A streamed answer as the Responses API's typed events: created, the message and its text part added, a
    delta per piece of text, then the text, part, message and response done. A failure mid-stream sends an
    `error` event and `response.failed`, never a hung connection. on_failure and on_finish as sse_events's."""
    response_id, message_id = _ids()
    sequence = iter(range(1 << 30))

    def event(kind: str, **fields) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': next(sequence), **fields})}\n\n"

    async def events():
        yield event("response.created", response=_response(response_id, message_id, model, body, None,
                                                           "in_progress", None))
        yield event("response.output_item.added", output_index=0, item=_message(message_id, None, "in_progress"))
        place = {"item_id": message_id, "output_index": 0, "content_index": 0}
        yield event("response.content_part.added", **place, part=_text_part(""))
        text, tokens_in, tokens_out, finish = [], 0, 0, "stop"
        try:
            async for delta in deltas:
                if delta["text"]:
                    text.append(delta["text"])
                    yield event("response.output_text.delta", **place, delta=delta["text"], logprobs=[])
                finish = delta["finish_reason"] or finish
                tokens_in, tokens_out = max(tokens_in, delta["input_tokens"]), max(tokens_out, delta["output_tokens"])
        except Exception as exc:  # a well-formed end, as OpenAI fails a response
            on_failure(exc)
            message = f"{model} failed mid-stream: {type(exc).__name__}: {str(exc)[:200]}"
            yield event("error", code="model_failed_mid_stream", message=message, param=None)
            failed = _response(response_id, message_id, model, body, "".join(text), "failed", None)
            yield event("response.failed", response={**failed, "error": {"code": "server_error", "message": message}})
            return
        whole, tokens_out = "".join(text), tokens_out or len(text)
        on_finish(tokens_in, tokens_out, whole)
        cut = finish == "length"
        status = "incomplete" if cut else "completed"
        yield event("response.output_text.done", **place, text=whole, logprobs=[])
        yield event("response.content_part.done", **place, part=_text_part(whole))
        yield event("response.output_item.done", output_index=0, item=_message(message_id, whole, status))
        yield event(f"response.{status}", response=_response(response_id, message_id, model, body, whole, status,
                                                               _usage(tokens_in, tokens_out), cut))

    return events()
