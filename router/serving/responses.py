"""OpenAI's Responses API (POST /v1/responses) over the chat route: the request's instructions and input become one
chat conversation (function calls and their outputs included), routed and answered as a chat is; the answer goes
back as a Response (router/serving/response_output.py). A stored response (router/store/responses.py) is continued
by `previous_response_id`: its conversation comes first, as OpenAI's does, without its instructions."""
from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, StrictBool, StrictFloat, StrictInt, Tag,
                      ValidationError, ValidationInfo, field_validator, model_validator)
from pydantic_core import PydanticCustomError

from router.serving.schemas import (FIELD_ERROR, MAX_ID_CHARS, MAX_MESSAGES, MAX_TOKENS_CAP, ChatCompletionRequest,
                                    FUNCTION_NAME, ContentPart, JsonBody, JsonSchema, refuse_unsupported)

TEXT_PARTS = {"input_text", "output_text"}  # what a message item's content list may hold: the models read text
NOT_STORED = ("is not stored here: it was made with store: false, deleted, pruned, or answered while this "
              "deployment kept no responses (store_responses: false)")
UNSUPPORTED = {"conversation": (bool, "conversations are not supported: continue a response with "
                                      "previous_response_id, or send the whole conversation in input"),
               "background": (bool, "background responses are not supported: answer in the foreground, or stream")}


class InputMessage(BaseModel):
    """An item of `input`: a message (its `type` may be left out)."""
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


class FunctionCallItem(BaseModel):
    """An item of `input`: a function call the model made earlier, which the client ran."""
    model_config = ConfigDict(extra="ignore")
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(pattern=FUNCTION_NAME)
    arguments: str


class FunctionCallOutputItem(BaseModel):
    """An item of `input`: what the client's function returned for a call."""
    model_config = ConfigDict(extra="ignore")
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str


def _item_type(value) -> str:
    return value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "message")


InputItem = Annotated[Annotated[InputMessage, Tag("message")] | Annotated[FunctionCallItem, Tag("function_call")] |
                      Annotated[FunctionCallOutputItem, Tag("function_call_output")], Discriminator(_item_type)]


class FunctionTool(BaseModel):
    """A function the model may call (the Responses API's flat form of the chat's tools)."""
    model_config = ConfigDict(extra="ignore")
    type: Literal["function"]
    name: str = Field(pattern=FUNCTION_NAME, description="OpenAI's rule: 1-64 of a-z, A-Z, 0-9, _ and -")
    description: str | None = None
    parameters: JsonSchema = None
    strict: StrictBool | None = None

    def as_chat_tool(self) -> dict:
        return {"type": "function", "function": self.model_dump(exclude={"type"}, exclude_none=True)}


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["function"]
    name: str


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
    """The Responses API's fields that a chat can carry; the stored-state fields are refused by name."""
    model_config = ConfigDict(extra="ignore")
    model: str = Field("auto", min_length=1)
    input: str | list[InputItem] = Field(min_length=1, max_length=MAX_MESSAGES)
    instructions: str | None = None
    max_output_tokens: StrictInt | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    temperature: StrictFloat = Field(1.0, ge=0.0, le=2.0)
    top_p: StrictFloat = Field(1.0, gt=0.0, le=1.0)
    stream: StrictBool = False
    user: str | None = Field(None, max_length=MAX_ID_CHARS)
    text: TextConfig | None = None
    store: StrictBool | None = None  # OpenAI's default: kept, unless false (or the deployment keeps none)
    previous_response_id: str | None = Field(None, min_length=1, max_length=64)
    conversation: str | dict | None = None
    tools: list[FunctionTool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: StrictBool | None = None
    background: StrictBool | None = None

    _chat: ChatCompletionRequest | None = PrivateAttr(None)
    _turns: list[dict] = PrivateAttr(default_factory=list)  # the conversation without the instructions
    # the id of the Response this request makes, known before the answer: a new chain's session (app.py)
    _response_id: str = PrivateAttr(default_factory=lambda: "resp_" + uuid.uuid4().hex[:24])

    @field_validator(*UNSUPPORTED)
    @classmethod
    def _nothing_unsupported(cls, value, info: ValidationInfo):
        return refuse_unsupported(UNSUPPORTED, info.field_name, value)

    @model_validator(mode="after")
    def _a_chat(self):
        """What the chat refuses is this body's input's fault, named so."""
        # a continuation's input may be only a function's output: checked after a stand-in for the stored turns,
        # which continue_from puts in their place
        stand_in = [{"role": "user", "content": "(earlier turns)"}] if self.previous_response_id is not None else []
        try:
            self._chat = self._as_chat(stand_in)
        except ValidationError as exc:
            raise PydanticCustomError(FIELD_ERROR, "{field}: {why}", {"field": "input", "why": "; ".join(
                e["msg"].removeprefix("Value error, ") for e in exc.errors())}) from None
        except ValueError as exc:
            raise PydanticCustomError(FIELD_ERROR, "{field}: {why}", {"field": "input", "why": str(exc)}) from None
        return self

    @property
    def chat(self) -> ChatCompletionRequest:
        return self._chat

    @property
    def response_id(self) -> str:
        return self._response_id

    def continue_from(self, history: list[dict]) -> None:
        """Put a stored response's conversation before this input (previous_response_id). ValueError: the two
        together are not a chat this router takes (too many messages, say)."""
        try:
            self._chat = self._as_chat(history)
        except ValidationError as exc:
            raise ValueError("; ".join(e["msg"] for e in exc.errors())) from None

    def conversation_after(self, output: list[dict]) -> list[dict]:
        """What a later response continues: this chat's messages without the instructions, then the output's."""
        calls = [{"id": item["call_id"], "type": "function",
                  "function": {"name": item["name"], "arguments": item["arguments"]}}
                 for item in output if item["type"] == "function_call"]
        text = "".join(part["text"] for item in output if item["type"] == "message" for part in item["content"])
        answer = {"role": "assistant", "content": text or None, **({"tool_calls": calls} if calls else {})}
        return [*self._turns, answer if calls or text else {"role": "assistant", "content": ""}]

    def input_items(self) -> list[InputMessage | FunctionCallItem | FunctionCallOutputItem]:
        return [InputMessage(role="user", content=self.input)] if isinstance(self.input, str) else list(self.input)

    def _as_chat(self, history: list[dict] = ()) -> ChatCompletionRequest:
        """The same request as a chat: the instructions as its system message, a stored conversation's messages
        (previous_response_id), then the input's items as messages (consecutive function calls as one assistant
        message's tool_calls, an output as a tool message)."""
        messages = [dict(m) for m in history]
        for item in self.input_items():
            if isinstance(item, FunctionCallItem):
                call = {"id": item.call_id, "type": "function",
                        "function": {"name": item.name, "arguments": item.arguments}}
                if not (len(messages) > len(history) and messages[-1].get("tool_calls")):  # not into stored turns
                    messages.append({"role": "assistant", "content": None, "tool_calls": []})
                messages[-1]["tool_calls"].append(call)
            elif isinstance(item, FunctionCallOutputItem):
                messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
            else:
                messages.append({"role": item.role, "content": item.text()})
        turns = messages
        messages = [{"role": "system", "content": self.instructions}, *messages] if self.instructions else messages
        fmt, choice = self.text.format if self.text else None, self.tool_choice
        chat = ChatCompletionRequest(
            model=self.model, messages=messages, max_completion_tokens=self.max_output_tokens,
            temperature=self.temperature, top_p=self.top_p, stream=self.stream, user=self.user,
            response_format=fmt.as_response_format() if fmt else None,
            tools=[t.as_chat_tool() for t in self.tools] if self.tools else None,
            tool_choice={"type": "function", "function": {"name": choice.name}} if isinstance(choice, NamedFunction)
            else choice, parallel_tool_calls=self.parallel_tool_calls)
        self._turns = turns
        return chat
