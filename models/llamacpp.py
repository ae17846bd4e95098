"""GGUF chat models through llama.cpp (xllamacpp: prebuilt CPU wheel, continuous batching, thread-safe)."""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import AsyncIterator

import xllamacpp

from models.backend import BackendError, ChatBackend, Generation, GenerationRequest, StreamDelta
from models.catalogue import ModelEntry
from models.fetch import verified_path


def _body(request: GenerationRequest, stream: bool) -> dict:
    text = {"prompt": request.prompt} if request.prompt is not None else {"messages": request.messages}
    body = {**text, "max_tokens": request.max_tokens,
            "temperature": request.temperature, "top_p": request.top_p, "stream": stream}
    if request.stop:
        body["stop"] = request.stop
    if request.seed is not None:
        body["seed"] = request.seed
    if not stream:
        body["logprobs"] = True  # mean token logprob is the model's own confidence
        body["top_logprobs"] = 1
    return body


class LlamaCppBackend(ChatBackend):
    """One xllamacpp Server per process, kept for the life of the process (deleting one can hang)."""

    def __init__(self, entry: ModelEntry, weights_dir: Path | None = None, *, n_parallel: int = 2,
                 slot_context: int = 4096, threads: int = 2, mmap: bool = False):
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
        self._server = xllamacpp.Server(params)

    def raw(self, body: dict, callback=None) -> dict | None:
        """One OpenAI-shaped body (chat, or completion when it has a prompt) as llama.cpp answers it; blocking."""
        handle = self._server.handle_completions if "prompt" in body else self._server.handle_chat_completions
        try:
            result = handle(body, callback) if callback else handle(body)
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"{self.name}: {exc}") from exc
        if isinstance(result, dict) and "error" in result:
            raise BackendError(f"{self.name}: {result['error']}")
        return result

    async def generate(self, request: GenerationRequest) -> Generation:
        started = time.perf_counter()
        result = await asyncio.to_thread(self.raw, _body(request, stream=False))
        choice = result["choices"][0]
        usage = result.get("usage", {})
        tokens = (choice.get("logprobs") or {}).get("content") or []
        mean_logprob = sum(t["logprob"] for t in tokens) / len(tokens) if tokens else None
        text = choice["text"] if "text" in choice else (choice.get("message") or {}).get("content")
        return Generation(text=text or "", finish_reason=choice.get("finish_reason") or "stop",
                          input_tokens=usage.get("prompt_tokens", 0), output_tokens=usage.get("completion_tokens", 0),
                          latency_s=time.perf_counter() - started, mean_logprob=mean_logprob)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()
        done = object()

        def on_chunk(chunk: dict) -> bool:
            loop.call_soon_threadsafe(queue.put_nowait, chunk)
            return cancelled.is_set()  # True tells llama.cpp to stop generating

        async def run() -> None:
            try:
                await asyncio.to_thread(self.raw, _body(request, stream=True), on_chunk)
                queue.put_nowait(done)
            except BackendError as exc:
                queue.put_nowait(exc)

        task = asyncio.create_task(run())
        try:
            while (chunk := await queue.get()) is not done:
                if isinstance(chunk, BaseException):
                    raise chunk
                if "error" in chunk:
                    raise BackendError(f"{self.name}: {chunk['error']}")
                choice = (chunk.get("choices") or [{}])[0]
                usage = chunk.get("usage") or {}
                timings = chunk.get("timings") or {}
                # chat chunks carry choices[0].delta.content; text-completion chunks carry choices[0].text
                yield StreamDelta(text=(choice.get("delta") or {}).get("content") or choice.get("text") or "",
                                  finish_reason=choice.get("finish_reason"),
                                  input_tokens=usage.get("prompt_tokens", timings.get("prompt_n", 0)),
                                  output_tokens=usage.get("completion_tokens", timings.get("predicted_n", 0)))
        finally:
            cancelled.set()
            await asyncio.shield(task)
