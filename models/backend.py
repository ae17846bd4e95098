"""One small async interface for every model runtime. A new model is a catalogue entry, not new code."""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import AsyncIterator

from models.catalogue import ModelEntry


class BackendError(RuntimeError):
    """The model could not answer (bad request to the runtime, runtime failure)."""


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


@dataclass
class Generation:
    text: str
    finish_reason: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    mean_logprob: float | None = None


@dataclass
class StreamDelta:
    """One piece of a streamed answer; the last one has finish_reason and the token counts."""

    text: str = ""
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0


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

