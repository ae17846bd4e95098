"""OpenAI-compatible HTTP bodies (pydantic), so validation and its error messages come for free."""
from __future__ import annotations

import math
import time
import uuid
from typing import Annotated, Literal

import jsonschema
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, ValidationInfo,
                      field_validator, model_validator)
from pydantic_core import PydanticCustomError

MAX_MESSAGES = 256
MAX_TOKENS_CAP = 2048
MAX_ID_CHARS = 200  # request and session ids: the decision store keeps them in 200-character columns


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


LONE_SURROGATE = "holds a lone UTF-16 surrogate (half of a \\ud800-\\udfff pair), which is not valid Unicode"
NOT_FINITE = "NaN and Infinity are not JSON numbers"
FIELD_ERROR = "field_error"  # a check over the whole body whose context names the field, for the 400's `param`


def first_invalid_value(data) -> tuple[tuple, str] | None:
    """The path of the first value in a parsed JSON body that JSON itself cannot carry, and why, or None:
    a string (or key) with a lone UTF-16 surrogate, or a NaN / Infinity literal, which Python's parser accepts
    but a Postgres JSON column and every strict client refuse. Iterative: a deep body must not exhaust the stack."""
    stack = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str) and not _is_unicode(value):
            return path, LONE_SURROGATE
        if isinstance(value, float) and not math.isfinite(value):
            return path, NOT_FINITE
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and not _is_unicode(key):
                    return path + ("(a key)",), LONE_SURROGATE
            stack.extend(reversed([(path + (key,), item) for key, item in value.items()]))
        elif isinstance(value, list):
            stack.extend(reversed([(path + (i,), item) for i, item in enumerate(value)]))
    return None


class JsonBody(BaseModel):
    """A request body. JSON's \\u escapes can carry half a surrogate pair, which is no Unicode character, and
    Python's parser takes NaN and Infinity, which are no JSON: the tokenizer, the store and UTF-8 cannot take
    them, so they are refused here with the field that holds them."""

    @model_validator(mode="before")
    @classmethod
    def _valid_json_values(cls, data):
        found = first_invalid_value(data)
        if found is not None:
            path, why = found
            raise PydanticCustomError(FIELD_ERROR, "{field}: {why}",
                                      {"field": ".".join(map(str, path)) or "body", "why": why})
        return data


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


def only_when_true(field: str, switch: str) -> PydanticCustomError:
    """The 400 for a field sent without the switch that it needs."""
    return PydanticCustomError(FIELD_ERROR, "{field}: {why}",
                               {"field": field, "why": f"only allowed when {switch} is true"})


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class Streaming(JsonBody):
    """`stream` and OpenAI's `stream_options`: with include_usage, a last chunk before [DONE] carries the usage."""

    stream: StrictBool = False
    stream_options: StreamOptions | None = None

    @model_validator(mode="after")
    def _options_need_a_stream(self):
        if self.stream_options is not None and not self.stream:
            raise only_when_true("stream_options", "stream")
        return self

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class Sampling(Streaming):
    """OpenAI's sampling fields, shared by chat and legacy completions; each body sets its own temperature."""

    top_p: StrictFloat = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: StrictInt | None = None
    # OpenAI's penalties, which llama.cpp applies as OpenAI defines them
    presence_penalty: StrictFloat = Field(0.0, ge=-2.0, le=2.0, description="OpenAI's range, -2.0 to 2.0")
    frequency_penalty: StrictFloat = Field(0.0, ge=-2.0, le=2.0, description="OpenAI's range, -2.0 to 2.0")

    @model_validator(mode="after")
    def _stop_list(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        return self

    def sampling(self) -> dict:
        """What the model samples with, as GenerationRequest takes it."""
        return {"temperature": self.temperature, "top_p": self.top_p, "stop": self.stop, "seed": self.seed,
                "presence_penalty": self.presence_penalty, "frequency_penalty": self.frequency_penalty}


NO_FUNCTIONS = "functions (OpenAI's deprecated form of tools) is not supported: send tools"
NO_TOKEN_IDS = "logit_bias is not supported: its token ids belong to one tokenizer, and each model here has its own"
# a field that asks for more than one plain text answer: (does this value ask for it, the 400's message)
UNSUPPORTED = {"functions": (bool, NO_FUNCTIONS),
               "logit_bias": (bool, NO_TOKEN_IDS),
               "modalities": (lambda v: set(v) - {"text"}, "modalities {value} are not supported: answers are text"),
               "audio": (lambda v: v is not None, "audio output is not supported: answers are text")}
COMPLETION_UNSUPPORTED = {"logit_bias": (bool, NO_TOKEN_IDS),
                          "echo": (bool, "echo is not supported: the answer holds the completion only"),
                          "suffix": (bool, "suffix (insertion) is not supported: the models only continue a prompt"),
                          "best_of": (lambda v: v > 1, "best_of above 1 is not supported: one answer is generated")}


def refuse_unsupported(table: dict, name: str, value):
    """`value` unless it asks for what `table` says these models cannot give; then a ValueError saying why."""
    asks, why = table[name]
    if value is not None and asks(value):
        raise ValueError(why.format(value=value))
    return value


# a scratch probe: llama.cpp kept the grammar of a schema 81 JSON levels deep and silently dropped one 101 deep
MAX_SCHEMA_DEPTH = 32


def nesting_depth(value) -> int:
    """How deep a parsed JSON value nests objects and arrays (a scalar is 0). Iterative, for a deep body."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def checked_schema(schema: dict | None) -> dict | None:
    """`schema` if it is a JSON Schema a model can follow, else a ValueError saying where it is not."""
    if schema is None:
        return None
    if nesting_depth(schema) > MAX_SCHEMA_DEPTH:
        raise ValueError(f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(map(str, exc.path)) or "the top"
        raise ValueError(f"not a JSON Schema: at {where}: {exc.message}") from None
    return schema


JsonSchema = Annotated[dict | None, AfterValidator(checked_schema)]
FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"  # OpenAI's rule for a function's and a schema's name


class Function(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(pattern=FUNCTION_NAME, description="OpenAI's rule: 1-64 of a-z, A-Z, 0-9, _ and -")
    description: str | None = None
    parameters: JsonSchema = Field(None, description="a JSON Schema of the arguments")
    strict: StrictBool | None = None


class Tool(BaseModel):
    """One of OpenAI's `tools`: a function the model may call. Only a model whose catalogue entry has
    `tool_calls: true` gets a request with tools."""
    model_config = ConfigDict(extra="ignore")
    type: Literal["function"]
    function: Function


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["function"]
    function: dict[Literal["name"], str]


class JsonSchemaFormat(BaseModel):
    """OpenAI's `response_format.json_schema`: the answer is JSON that follows `schema`."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    name: str = Field(pattern=FUNCTION_NAME, description="OpenAI's rule: 1-64 of a-z, A-Z, 0-9, _ and -")
    description: str | None = None
    json_schema: JsonSchema = Field(None, alias="schema", description="a JSON Schema; none: any JSON object")
    strict: StrictBool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's `response_format`: plain text, any JSON object, or JSON that follows a schema. llama.cpp makes the
    sampler follow it (a grammar); a remote model gets it as it came."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self):
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type 'json_schema', and only with it")
        return self

    def as_request(self) -> dict | None:
        """What a model is asked for (GenerationRequest.response_format); None for plain text."""
        return None if self.type == "text" else self.model_dump(mode="json", by_alias=True, exclude_none=True)


TEXT_PARTS = {"text"}  # images, audio and files would be dropped unseen: the ensemble's models read text only


class ChatCompletionRequest(Sampling):
    """Fields OpenAI clients send; unknown extra fields are ignored, as OpenAI-compatible servers do. Fields
    that ask for what these models cannot give (audio, logit_bias) are refused, so that a client
    never takes a plain answer for the one it asked for."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field("auto", min_length=1)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    # strict scalars: "stream": "true" or "max_tokens": "16" is a client bug, answered with a 400 naming the field
    max_tokens: StrictInt | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    max_completion_tokens: StrictInt | None = Field(None, ge=1, le=MAX_TOKENS_CAP)
    temperature: StrictFloat = Field(0.7, ge=0.0, le=2.0)
    n: StrictInt = Field(1, ge=1, le=1, description="only one choice is supported")
    user: str | None = Field(None, max_length=MAX_ID_CHARS, description="the session id, when no x-session-id")
    tools: list[Tool] | None = Field(None, max_length=128, description="OpenAI's limit")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    functions: list | None = None
    response_format: ResponseFormat | None = None
    logit_bias: dict | None = None
    modalities: list[str] | None = None
    audio: dict | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20, description="OpenAI's range; needs logprobs: true")

    @field_validator(*UNSUPPORTED)
    @classmethod
    def _only_text_answers(cls, value, info: ValidationInfo):
        return refuse_unsupported(UNSUPPORTED, info.field_name, value)

    @field_validator("messages")
    @classmethod
    def _text_with_a_user_message(cls, messages: list[ChatMessage]):
        for i, m in enumerate(messages):
            for k, part in enumerate(m.content if isinstance(m.content, list) else []):
                if part.type not in TEXT_PARTS:
                    raise PydanticCustomError(FIELD_ERROR, "{field}: {why}", {
                        "field": f"messages.{i}.content.{k}.type",
                        "why": f"content part type {part.type!r} is not supported: the ensemble's models read "
                               f"text only, so it would be dropped unseen"})
            if m.role == "user" and not m.text().strip():
                raise ValueError(f"messages[{i}] is a user message with empty content")
        if not any(m.role == "user" for m in messages):
            raise ValueError("at least one message must have role 'user'")
        return messages

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise only_when_true("top_logprobs", "logprobs")
        return self

    @model_validator(mode="after")
    def _tool_choice_among_tools(self):
        if self.tool_choice is not None and not self.tools:
            raise PydanticCustomError(FIELD_ERROR, "{field}: {why}",
                                      {"field": "tool_choice", "why": "only allowed when tools are given"})
        if isinstance(self.tool_choice, NamedToolChoice):
            name, names = self.tool_choice.function.get("name"), [t.function.name for t in self.tools]
            if name not in names:
                raise PydanticCustomError(FIELD_ERROR, "{field}: {why}", {
                    "field": "tool_choice", "why": f"names function {name!r}, which is not among the tools {names}"})
        return self

    def needs_tool_calls(self) -> bool:
        """The model may answer with tool calls: tools are given, and tool_choice is not "none"."""
        return bool(self.tools) and self.tool_choice != "none"

    def tool_fields(self) -> dict:
        """What a tool-calling model gets beyond the plain request (GenerationRequest's tools fields, and the
        messages as sent, with their tool_calls and tool_call_id); nothing when the request needs no tool calls."""
        if not self.needs_tool_calls():
            return {}
        return {"tools": [t.model_dump(exclude_none=True) for t in self.tools],
                "tool_choice": self.tool_choice.model_dump() if isinstance(self.tool_choice, NamedToolChoice)
                else self.tool_choice, "parallel_tool_calls": self.parallel_tool_calls,
                "messages": [m.model_dump(exclude_none=True) for m in self.messages]}

    def asked_logprobs(self) -> int | None:
        """How many alternatives per token the client wants with the answer's token logprobs; None: no logprobs."""
        return (self.top_logprobs or 0) if self.logprobs else None

    def output_budget(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 512

    def routing_text(self) -> str:
        """What the router reads: the latest user message."""
        return next(m.text() for m in reversed(self.messages) if m.role == "user")

    def as_plain_messages(self) -> list[dict]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def chat_logprobs(entries: list[dict] | None) -> dict | None:
    """A chat choice's `logprobs`: OpenAI's {"content": [one entry per token]}, or null when not asked."""
    return None if entries is None else {"content": entries}


def legacy_logprobs(entries: list[dict] | None, offset: int = 0) -> dict | None:
    """A legacy completion choice's `logprobs`: OpenAI's parallel lists (tokens, token_logprobs, top_logprobs as
    token -> logprob, text_offset counted from `offset`), or null when not asked."""
    if entries is None:
        return None
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
            "text_offset": offsets}


def chat_completion(model: str, text: str, finish_reason: str, input_tokens: int, output_tokens: int,
                    router: dict, logprobs: list[dict] | None = None, tool_calls: list[dict] | None = None) -> dict:
    # a message that calls tools has them, and content only where the model also wrote some (OpenAI's null)
    message = {"role": "assistant", "content": text or None, "tool_calls": tool_calls} if tool_calls else \
        {"role": "assistant", "content": text}
    return {"id": completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason,
                         "logprobs": chat_logprobs(logprobs)}],
            "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                      "total_tokens": input_tokens + output_tokens},
            "router": router}


def text_completion(model: str, text: str, finish_reason: str, input_tokens: int, output_tokens: int,
                    router: dict, logprobs: list[dict] | None = None) -> dict:
    return {"id": "cmpl-" + completion_id()[9:], "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "text": text, "finish_reason": finish_reason,
                                         "logprobs": legacy_logprobs(logprobs)}],
            "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                      "total_tokens": input_tokens + output_tokens},
            "router": router}


def model_objects(policy) -> list[dict]:
    """OpenAI's model objects for /v1/models: auto, each profile as auto:NAME, then every model the policy serves."""
    def model(model_id: str, **extra) -> dict:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "ensemble-router", **extra}

    return [model("auto"), *(model(f"auto:{name}") for name in policy.profiles),
            *(model(name, fallback=name == policy.fallback) for name in policy.models)]


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


MAX_EMBEDDING_INPUTS = 256


class TextInputs(JsonBody):
    """`input`: one text or a list of texts, as OpenAI's embeddings and moderations take it."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field("auto", min_length=1)
    input: str | list[str] = Field(description="a text or a list of texts")

    @field_validator("input")
    @classmethod
    def _texts(cls, value):
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("input must not be empty")
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} inputs per request")
        for i, t in enumerate(texts):
            if not t.strip():
                raise ValueError(f"input[{i}] is empty")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingRequest(TextInputs):
    """OpenAI's embeddings body. The official client asks for base64 unless told otherwise."""

    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = None


class ModerationRequest(TextInputs):
    """OpenAI's moderations body."""


OPENAI_MODERATION_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                                "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions",
                                "sexual", "sexual/minors", "violence", "violence/graphic")


def moderation_result(flagged: bool, probability: float, decided_by: str) -> dict:
    """OpenAI's result shape. The specialist detects offensive or profane language, reported as harassment;
    it says nothing about the other categories, which stay false with score 0."""
    categories = {c: False for c in OPENAI_MODERATION_CATEGORIES}
    scores = {c: 0.0 for c in OPENAI_MODERATION_CATEGORIES}
    categories["harassment"], scores["harassment"] = flagged, probability
    return {"flagged": flagged, "categories": categories, "category_scores": scores, "decided_by": decided_by}


class CompletionRequest(Sampling):
    """OpenAI's legacy completions body: one prompt per request (each prompt is routed on its own)."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field("auto", min_length=1)
    prompt: str | list[str]
    max_tokens: StrictInt = Field(16, ge=1, le=MAX_TOKENS_CAP)
    temperature: StrictFloat = Field(1.0, ge=0.0, le=2.0)
    user: str | None = Field(None, max_length=MAX_ID_CHARS, description="the end user (policy escalation.client)")
    logprobs: StrictInt | None = Field(None, ge=0, le=5, description="alternatives per token; OpenAI's range")
    n: StrictInt = Field(1, ge=1, le=1, description="only one choice is supported")
    logit_bias: dict | None = None
    echo: StrictBool | None = None
    suffix: str | None = None
    best_of: StrictInt | None = Field(None, ge=1)

    @field_validator(*COMPLETION_UNSUPPORTED)
    @classmethod
    def _one_plain_completion(cls, value, info: ValidationInfo):
        return refuse_unsupported(COMPLETION_UNSUPPORTED, info.field_name, value)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value):
        prompts = [value] if isinstance(value, str) else value
        if len(prompts) != 1:
            raise ValueError("give exactly one prompt")
        if not prompts[0].strip():
            raise ValueError("prompt is empty")
        return prompts[0]
