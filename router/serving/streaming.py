"""OpenAI-style server-sent events from a model's token stream: chat.completion.chunk events for
/v1/chat/completions, text_completion events for /v1/completions. A failure mid-stream ends the stream with
an OpenAI-shaped error event and [DONE], never a hung connection."""
from __future__ import annotations

import json
import time
from typing import AsyncIterator, Callable

from fastapi.responses import StreamingResponse

from router.serving.schemas import chat_logprobs, completion_id, error_body, legacy_logprobs


def sse_events(deltas: AsyncIterator[dict], model: str, text_completion: bool,
               on_failure: Callable[[Exception], None],
               on_finish: Callable[[int, int, str], None], include_usage: bool = False) -> AsyncIterator[str]:
    """on_finish(input_tokens, output_tokens, text) once the model's stream ended normally: the runtime's usage
    from the last delta, or the number of non-empty deltas when the runtime reported none. With include_usage
    (OpenAI's stream_options), that usage also goes out as a last chunk with no choices, before [DONE]."""
    cid, created = completion_id(), int(time.time())
    if text_completion:
        cid = "cmpl-" + cid[9:]

    def chunk(text: str | None, finish: str | None, role: bool = False, logprobs: list[dict] | None = None,
              offset: int = 0, tool_calls: list[dict] | None = None) -> str:
        if text_completion:
            body = {"id": cid, "object": "text_completion", "created": created, "model": model,
                    "choices": [{"index": 0, "text": text or "", "finish_reason": finish,
                                 "logprobs": legacy_logprobs(logprobs, offset)}]}
        else:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            if tool_calls:  # pieces of the model's tool calls, by index, as the model streamed them
                delta["tool_calls"] = tool_calls
            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                                 "logprobs": chat_logprobs(logprobs)}]}
        return f"data: {json.dumps(body)}\n\n"

    async def events():
        if not text_completion:
            yield chunk(None, None, role=True)
        tokens_in = tokens_out = pieces = length = 0
        text = []
        try:
            async for delta in deltas:
                if delta["text"] or delta.get("logprobs") or delta.get("tool_calls"):
                    pieces += 1
                    text.append(delta["text"])
                    yield chunk(delta["text"], None, logprobs=delta.get("logprobs"), offset=length,
                                tool_calls=delta.get("tool_calls"))
                    length += len(delta["text"])  # where the next piece starts: a legacy logprob's text_offset
                if delta["finish_reason"]:
                    yield chunk(None, delta["finish_reason"])
                tokens_in, tokens_out = max(tokens_in, delta["input_tokens"]), max(tokens_out, delta["output_tokens"])
        except Exception as exc:  # end the stream with a well-formed error event, never a hang
            on_failure(exc)
            message = f"{model} failed mid-stream: {type(exc).__name__}: {str(exc)[:200]}"
            yield f"data: {json.dumps(error_body(message, 'server_error', code='model_failed_mid_stream'))}\n\n"
        else:
            on_finish(tokens_in, tokens_out or pieces, "".join(text))
            if include_usage:
                usage = {"prompt_tokens": tokens_in, "completion_tokens": tokens_out or pieces,
                         "total_tokens": tokens_in + (tokens_out or pieces)}
                body = {"id": cid, "object": "text_completion" if text_completion else "chat.completion.chunk",
                        "created": created, "model": model, "choices": [], "usage": usage}
                yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"

    return events()


class ModelStreamResponse(StreamingResponse):
    """A streamed answer that stops its model's generation when it ends before the model's stream does (the client
    left): Starlette then cancels the response wherever it waits and leaves the body's generators to the garbage
    collector, and Serve did not always pass that on to the model's replica (tests/test_serve_safety_nets.py)."""

    def __init__(self, first: dict | None, deltas, render, **kwargs):
        self.deltas, self.ended = deltas, False
        super().__init__(render(self._all_deltas(first)), **kwargs)

    async def _all_deltas(self, first: dict | None):
        if first is not None:
            yield first
        async for delta in self.deltas:
            yield delta
        self.ended = True

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self.ended:
                self.deltas.cancel()
