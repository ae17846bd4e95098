"""One small async interface for every model runtime. A new model is a catalogue entry, not new code."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import AsyncIterator

from models.catalogue import ModelEntry


class BackendError(RuntimeError):
    """The model could not answer (bad request to the runtime, runtime failure)."""


class RequestRefused(BackendError):
    """The runtime refused the request itself, as a client error (a JSON schema it cannot follow): unlike a
    failure, the client has something to fix when every model refuses."""


@dataclass
class GenerationRequest:
    """A chat (`messages`) or, with `prompt` set, a raw text completion of that prompt."""

    messages: list[dict]
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] | None = None
    seed: int | None = None
    prompt: str | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None  # the client asked for token logprobs, with this many alternatives; None: not asked
    confidence: bool = False  # the router judges this answer by its mean token logprob (a cascade floor)
    response_format: dict | None = None  # OpenAI's json_object or json_schema; None: plain text
    tools: list[dict] | None = None  # OpenAI's tools, with tool_choice and parallel_tool_calls: a tool-calling model
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None


@dataclass
class Generation:
    text: str
    finish_reason: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    mean_logprob: float | None = None
    logprobs: list[dict] | None = None  # the answer's tokens as OpenAI's chat logprobs entries, when asked
    tool_calls: list[dict] | None = None  # OpenAI's message.tool_calls, when the model called tools


@dataclass
class StreamDelta:
    """One piece of a streamed answer; the last one has finish_reason and the token counts."""

    text: str = ""
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    logprobs: list[dict] | None = None  # this piece's tokens, when asked
    tool_calls: list[dict] | None = None  # OpenAI's delta.tool_calls: pieces of calls, by index


def token_logprob(entry: dict, alternatives: int) -> dict:
    """A runtime's logprob entry for one token in OpenAI's chat shape (token, logprob, bytes, top_logprobs), with
    at most `alternatives` top alternatives (a runtime may add fields such as its token id, or give more)."""
    def plain(t: dict) -> dict:
        return {"token": t["token"], "logprob": t["logprob"],
                "bytes": t.get("bytes") if t.get("bytes") is not None else list(t["token"].encode())}
    return {**plain(entry), "top_logprobs": [plain(t) for t in (entry.get("top_logprobs") or [])[:alternatives]]}


def entries_from_legacy(legacy: dict) -> list[dict]:
    """A legacy completion's logprobs (parallel lists: tokens, token_logprobs, top_logprobs as token -> logprob)
    as chat-shaped entries, the one shape the backends return."""
    tokens, tops = legacy.get("tokens") or [], legacy.get("top_logprobs") or []
    tops = [top or {} for top in tops] + [{}] * (len(tokens) - len(tops))  # a list of nulls, or none, is allowed
    return [{"token": token, "logprob": logprob, "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top.items()]}
            for token, logprob, top in zip(tokens, legacy.get("token_logprobs") or [], tops)]


class ChatBackend(abc.ABC):
    def __init__(self, entry: ModelEntry):
        self.entry = entry

    @property
    def name(self) -> str:
        return self.entry.name

    @abc.abstractmethod
    async def generate(self, request: GenerationRequest) -> Generation: ...

    @abc.abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]: ...

