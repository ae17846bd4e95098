"""GGUF chat models through llama.cpp (xllamacpp: prebuilt CPU wheel, continuous batching, thread-safe)."""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import AsyncIterator

import xllamacpp

from models.backend import (BackendError, ChatBackend, Generation, GenerationRequest, RequestRefused, StreamDelta,
                            token_logprob)
from models.catalogue import ModelEntry
from models.fetch import verified_path


def _body(request: GenerationRequest) -> dict:
    """Always streamed: a stream is what llama.cpp can stop when its reader goes away (a non-streamed call runs
    to max_tokens after the client has left, holding a slot); a whole answer is gathered from its chunks."""
    alternatives = max(1, request.logprobs or 0)  # always some: the mean token logprob is the model's confidence
    # llama.cpp reads a completion's `logprobs` as the number of alternatives, a chat's as a switch
    text = {"prompt": request.prompt, "logprobs": alternatives} if request.prompt is not None else \
        {"messages": request.messages, "logprobs": True, "top_logprobs": alternatives}
    body = {**text, "max_tokens": request.max_tokens, "temperature": request.temperature, "top_p": request.top_p,
            "stream": True,
            # usage counts the whole prompt; the timings' prompt_n counts only what the prompt cache missed
            "stream_options": {"include_usage": True}}
    if request.stop:
        body["stop"] = request.stop
    if request.seed is not None:
        body["seed"] = request.seed
    if request.response_format is not None:  # llama.cpp turns a JSON schema into a grammar the sampler follows
        body["response_format"] = request.response_format
    for penalty in ("presence_penalty", "frequency_penalty"):
        if getattr(request, penalty):
            body[penalty] = getattr(request, penalty)
    return body


def _delta(chunk: dict, model: str, asked: int | None) -> tuple[StreamDelta, list[float]]:
    """One runtime chunk as a StreamDelta (with its tokens' logprobs when `asked`), and those tokens' logprobs."""
    if "error" in chunk:
        raise BackendError(f"{model}: {chunk['error']}")
    choice = (chunk.get("choices") or [{}])[0]
    usage, timings = chunk.get("usage") or {}, chunk.get("timings") or {}
    # chat chunks carry choices[0].delta.content; text-completion chunks carry choices[0].text
    delta = StreamDelta(text=(choice.get("delta") or {}).get("content") or choice.get("text") or "",
                        finish_reason=choice.get("finish_reason"),
                        input_tokens=usage.get("prompt_tokens", timings.get("prompt_n", 0) + timings.get("cache_n", 0)),
                        output_tokens=usage.get("completion_tokens", timings.get("predicted_n", 0)))
    tokens = (choice.get("logprobs") or {}).get("content") or []
    if asked is not None and tokens:
        delta.logprobs = [token_logprob(t, asked) for t in tokens]
    return delta, [t["logprob"] for t in tokens]


class LlamaCppBackend(ChatBackend):
    """One xllamacpp Server per process, kept for the life of the process (deleting one can hang)."""

    def __init__(self, entry: ModelEntry, weights_dir: Path | None = None, *, n_parallel: int = 2,
                 slot_context: int = 4096, threads: int = 2, mmap: bool = False,
                 warmup: bool = False):
        super().__init__(entry)
        path = verified_path(entry.weights[0], weights_dir)
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        # read into memory rather than mapped: llama.cpp repacks Q4_K weights into its own buffer, and a mapped
        # file then stays resident beside that copy (the 1.5B: 2.0 GiB PSS mapped, 1.4 read; same tokens/s)
        params.load_mode = xllamacpp.llama_load_mode.LLAMA_LOAD_MODE_MMAP if mmap else \
            xllamacpp.llama_load_mode.LLAMA_LOAD_MODE_NONE
        params.n_parallel = n_parallel
        params.n_ctx = min(entry.context_length, slot_context) * n_parallel
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.verbosity = 0
        # llama.cpp's empty decode at load: about 1 s of CPU for the 1.5B, and no faster first answer
        # (bench/llama_warmup.md)
        params.warmup = warmup
        self._server = xllamacpp.Server(params)

    def raw(self, body: dict, callback=None) -> dict | None:
        """One OpenAI-shaped body (chat, or completion when it has a prompt) as llama.cpp answers it; blocking.
        With a callback, each chunk of a streamed body goes to it, and a True return stops the generation."""
        handle = self._server.handle_completions if "prompt" in body else self._server.handle_chat_completions
        try:
            result = handle(body, callback) if callback else handle(body)
        except ValueError as exc:  # llama.cpp's word for a request it will not take, e.g. a schema it cannot follow
            raise RequestRefused(f"{self.name}: {exc}") from exc
        except RuntimeError as exc:
            raise BackendError(f"{self.name}: {exc}") from exc
        if isinstance(result, dict) and "error" in result:
            raise BackendError(f"{self.name}: {result['error']}")
        return result

    async def _chunks(self, request: GenerationRequest) -> AsyncIterator[tuple[StreamDelta, list[float]]]:
        """The runtime's chunks as they come. When the consumer stops early (the client left, a timeout moved
        on to another model), llama.cpp stops at its next token and frees the slot."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()
        done = object()

        def on_chunk(chunk: dict) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return cancelled.is_set()  # True tells llama.cpp to stop generating

        async def run() -> None:
            try:
                await asyncio.to_thread(self.raw, _body(request), on_chunk)
                queue.put_nowait(done)
            except BackendError as exc:
                queue.put_nowait(exc)

        task = asyncio.create_task(run())
        try:
            while (chunk := await queue.get()) is not done:
                if isinstance(chunk, BaseException):
                    raise chunk
                yield _delta(chunk, self.name, request.logprobs)
        finally:
            cancelled.set()
            await asyncio.shield(task)

    async def generate(self, request: GenerationRequest) -> Generation:
        started = time.perf_counter()
        text, logprobs, entries, finish, tokens_in, tokens_out = [], [], [], "stop", 0, 0
        async for delta, token_logprobs in self._chunks(request):
            text.append(delta.text)
            logprobs += token_logprobs
            entries += delta.logprobs or []
            finish = delta.finish_reason or finish  # the usage chunk comes after the one that says why it ended
            tokens_in, tokens_out = max(tokens_in, delta.input_tokens), max(tokens_out, delta.output_tokens)
        return Generation(text="".join(text), finish_reason=finish, input_tokens=tokens_in, output_tokens=tokens_out,
                          latency_s=time.perf_counter() - started,
                          mean_logprob=sum(logprobs) / len(logprobs) if logprobs else None,
                          logprobs=entries if request.logprobs is not None else None)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        async for delta, _ in self._chunks(request):
            yield delta
