"""Models served elsewhere behind an OpenAI-compatible API (OpenAI, vLLM, a llama.cpp server), through the
official `openai` client. A hosted large model as the fallback is a catalogue entry with `runtime: openai`."""
from __future__ import annotations

import asyncio
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import AsyncIterator

import openai

from models.backend import (BackendError, ChatBackend, Generation, GenerationRequest, RequestRefused, StreamDelta,
                            entries_from_legacy, token_logprob)
from models.catalogue import ModelEntry


def _arguments(request: GenerationRequest, model: str, stream: bool) -> dict:
    """The call's keyword arguments: chat (`messages`) or legacy completion (`prompt`). Streamed or not, a caller
    who goes away cancels the call, which closes its connection, so the remote server can stop generating."""
    text = {"prompt": request.prompt} if request.prompt is not None else {"messages": request.messages}
    arguments = {**text, "model": model, "max_tokens": request.max_tokens, "temperature": request.temperature,
                 "top_p": request.top_p, "stream": stream}
    if stream:
        arguments["stream_options"] = {"include_usage": True}
    # only when the client asks, or a cascade floor needs the answer's confidence: some hosted models refuse them
    if request.logprobs is not None or request.confidence:
        alternatives = request.logprobs or 0
        arguments.update({"logprobs": alternatives} if request.prompt is not None else
                         {"logprobs": True, "top_logprobs": alternatives})
    optional = {"stop": request.stop, "seed": request.seed, "presence_penalty": request.presence_penalty or None,
                "frequency_penalty": request.frequency_penalty or None, "response_format": request.response_format,
                "tools": request.tools, "tool_choice": request.tool_choice,
                "parallel_tool_calls": request.parallel_tool_calls}
    return {**arguments, **{k: v for k, v in optional.items() if v is not None}}


def _entries(choice) -> list[dict]:
    """A choice's token logprobs, chat-shaped (a legacy completion's parallel lists are converted); none (an empty
    list) where the server sent none."""
    given = getattr(choice, "logprobs", None)
    if given is None:
        return []
    return [t.model_dump() for t in given.content or []] if hasattr(given, "content") else \
        entries_from_legacy(given.model_dump())


def _logprobs(choice, asked: int | None) -> list[dict] | None:
    """The token logprobs the client asked for, with `asked` alternatives each; None unasked."""
    return None if asked is None else [token_logprob(t, asked) for t in _entries(choice)]


def _mean_logprob(choice) -> float | None:
    """The answer's mean token logprob, the confidence a cascade floor judges; None where the server sent none."""
    values = [t["logprob"] for t in _entries(choice) if t.get("logprob") is not None]
    return sum(values) / len(values) if values else None


def _tool_calls(message) -> list[dict] | None:
    """A chat message's or delta's tool calls as OpenAI's dicts; None when it has none (or is a legacy choice)."""
    calls = getattr(message, "tool_calls", None)
    return [call.model_dump(exclude_none=True) for call in calls] if calls else None


def _delta(chunk, asked: int | None) -> StreamDelta:
    """One streamed chunk of either API as a StreamDelta; the usage chunk has no choices."""
    choice = chunk.choices[0] if chunk.choices else None
    text = "" if choice is None else (choice.delta.content if hasattr(choice, "delta") else choice.text) or ""
    usage = chunk.usage
    return StreamDelta(text=text, finish_reason=choice.finish_reason if choice else None,
                       input_tokens=usage.prompt_tokens if usage else 0,
                       output_tokens=usage.completion_tokens if usage else 0,
                       logprobs=_logprobs(choice, asked) if choice else None,
                       tool_calls=_tool_calls(getattr(choice, "delta", None)))


class RemoteOpenAIBackend(ChatBackend):
    """No weights and no threads here: the runtime options that size llama.cpp do not apply, and `n_parallel`
    (the replica's slots) bounds how many calls this replica has open at the remote API at once."""

    def __init__(self, entry: ModelEntry, weights_dir: Path | None = None, **_runtime_options):
        super().__init__(entry)
        endpoint = entry.endpoint
        key = os.environ.get(endpoint.api_key_env) if endpoint.api_key_env else "none"
        if not key:
            raise BackendError(f"{entry.name}: the environment variable {endpoint.api_key_env}, which the catalogue "
                               f"names for its API key, is not set where the model's replica runs")
        self.where = f"{endpoint.base_url} (model {endpoint.model!r})"
        self._key, self._loop, self._open = key, None, None

    def _client(self) -> openai.AsyncOpenAI:
        """A client of the running event loop: its connection pool belongs to the loop that opened it (a replica
        has one loop; an offline job may run each call in a fresh one)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            endpoint = self.entry.endpoint
            # no retries: the policy's fallback chain is what answers when a call fails
            self._loop, self._open = loop, openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=self._key,
                                                              timeout=endpoint.timeout_s, max_retries=0)
        return self._open

    def _create(self, request: GenerationRequest):
        client = self._client()
        return client.completions.create if request.prompt is not None else client.chat.completions.create

    @contextmanager
    def _named_errors(self):
        """The API's failures as BackendErrors that name this model, the server and the server's own words."""
        try:
            yield
        except openai.APIStatusError as exc:
            detail = exc.body.get("message") if isinstance(exc.body, dict) else None  # the API's own words
            # a 400 or 422 is the server refusing this request, as it would refuse it again
            refused = isinstance(exc, (openai.BadRequestError, openai.UnprocessableEntityError))
            raise (RequestRefused if refused else BackendError)(
                f"{self.name}: {self.where} answered {exc.status_code}: {detail or exc.message}") from exc
        except openai.APIError as exc:  # unreachable, timed out, or a body that is not the API's
            raise BackendError(f"{self.name}: {self.where}: {type(exc).__name__}: {exc}") from exc

    async def generate(self, request: GenerationRequest) -> Generation:
        """One call, not streamed: each streamed chunk costs this replica a parse while the remote model generates
        (bench/remote_hop.py: the whole answer took 59 ms more than the server's own with every call streamed, 35
        ms more this way)."""
        started = time.perf_counter()
        with self._named_errors():
            reply = await self._create(request)(**_arguments(request, self.entry.endpoint.model, stream=False))
        if not getattr(reply, "choices", None):
            raise BackendError(f"{self.name}: {self.where} answered without choices")
        choice, usage = reply.choices[0], reply.usage
        text = choice.text if request.prompt is not None else choice.message.content
        return Generation(text=text or "", finish_reason=choice.finish_reason or "stop",
                          input_tokens=usage.prompt_tokens if usage else 0,
                          output_tokens=usage.completion_tokens if usage else 0,
                          latency_s=time.perf_counter() - started, mean_logprob=_mean_logprob(choice),
                          logprobs=_logprobs(choice, request.logprobs),
                          tool_calls=_tool_calls(getattr(choice, "message", None)))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        with self._named_errors():
            stream = await self._create(request)(**_arguments(request, self.entry.endpoint.model, stream=True))
            async with stream:
                async for chunk in stream:
                    yield _delta(chunk, request.logprobs)
