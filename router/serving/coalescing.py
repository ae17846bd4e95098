"""A model's token stream in fewer, larger pieces: the deltas that arrive within `interval_s` of the last piece
sent go out together, as vLLM's `stream_interval` does in tokens. Each piece crosses two Ray hops (the model's
replica to the ingress, the ingress to the proxy), whose CPU is taken beside the model that generates: at 50 ms,
half the pieces and about 0.7 ms less CPU a token (`bench/stream_interval.md`). The first piece with content goes
at once, so the time to the first token does not move; the end of the stream goes at once too."""
from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

_END = object()


def _has_content(delta: dict) -> bool:
    return bool(delta.get("text") or delta.get("logprobs") or delta.get("tool_calls"))


def merge_deltas(deltas: list[dict]) -> dict:
    """Several StreamDelta dicts as one: texts and logprobs joined in order, the last finish reason, the largest
    token counts (the runtime's usage is cumulative). Deltas with tool calls are never merged (see coalesced)."""
    if len(deltas) == 1:
        return deltas[0]
    logprobs = [entry for d in deltas for entry in (d.get("logprobs") or [])]
    return {**deltas[-1], "text": "".join(d.get("text") or "" for d in deltas),
            "finish_reason": next((d["finish_reason"] for d in reversed(deltas) if d.get("finish_reason")), None),
            "input_tokens": max(d.get("input_tokens") or 0 for d in deltas),
            "output_tokens": max(d.get("output_tokens") or 0 for d in deltas),
            "logprobs": logprobs if any(d.get("logprobs") is not None for d in deltas) else None,
            "tool_calls": None}


async def coalesced(deltas: AsyncIterator[dict], interval_s: float) -> AsyncIterator[dict]:
    """`deltas` with those that arrive within `interval_s` of the last piece sent merged into one. A delta with
    tool calls goes alone (a client joins tool-call pieces across chunks, by index). When the consumer stops
    early, the model's stream is closed, so that its runtime stops generating."""
    if interval_s <= 0:
        async for delta in deltas:
            yield delta
        return
    loop, queue = asyncio.get_running_loop(), asyncio.Queue()

    async def pump() -> None:
        try:
            async for delta in deltas:
                queue.put_nowait(delta)
            queue.put_nowait(_END)
        except Exception as exc:  # the model failed mid-stream: its error follows the tokens it sent
            queue.put_nowait(exc)

    task = asyncio.create_task(pump())
    pending: list[dict] = []
    sent_at: float | None = None  # when the last piece with content went; None until the first has
    try:
        while True:
            if pending and sent_at is not None:
                try:
                    item = await asyncio.wait_for(queue.get(), max(0.0, sent_at + interval_s - loop.time()))
                except asyncio.TimeoutError:
                    yield merge_deltas(pending)
                    pending, sent_at = [], loop.time()
                    continue
            else:
                item = await queue.get()
            if item is _END or isinstance(item, Exception):
                if pending:
                    yield merge_deltas(pending)
                if item is _END:
                    return
                raise item
            if item.get("tool_calls"):
                if pending:
                    yield merge_deltas(pending)
                pending = [item]
            else:
                pending.append(item)
            if sent_at is None or item.get("tool_calls") or loop.time() - sent_at >= interval_s:
                yield merge_deltas(pending)
                if any(_has_content(d) for d in pending):
                    sent_at = loop.time()
                pending = []
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
