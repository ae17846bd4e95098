"""Waits with a bound: no admitted request waits for a model longer than the policy's
`limits.max_queue_wait_s`. The ingress stamps each generation with the time it was admitted and the bound; the
model replica lets one request per llama.cpp slot generate and makes the rest wait for a slot only until that
deadline. Past it the request fails fast with QueueWaitExceeded, and the ingress answers 503 with Retry-After.
A request therefore ends within the bound plus one answer's time (the answer a slot was busy with)."""
from __future__ import annotations

import asyncio
import contextlib
import time

ADMITTED_AT, MAX_WAIT = "admitted_at", "max_queue_wait_s"


class QueueWaitExceeded(Exception):
    """A request waited for a model longer than the policy allows; the client should retry later."""


def is_queue_wait(exc: BaseException) -> bool:
    """True for QueueWaitExceeded as it reaches the ingress (Ray wraps a replica's exception)."""
    return isinstance(exc, QueueWaitExceeded) or "max_queue_wait_s" in str(exc)


def stamped(generation: dict, max_wait_s: float | None) -> dict:
    """The generation request with the time it was admitted and the bound on its wait (the ingress's side)."""
    return generation if max_wait_s is None else {**generation, ADMITTED_AT: time.time(), MAX_WAIT: max_wait_s}


def queue_deadline(request: dict) -> tuple[dict, float | None]:
    """(the request without the stamps, the wall-clock deadline for its wait, or None when unbounded)."""
    request = dict(request)
    admitted, bound = request.pop(ADMITTED_AT, None), request.pop(MAX_WAIT, None)
    return request, None if admitted is None or bound is None else admitted + bound


@contextlib.asynccontextmanager
async def slot(slots: asyncio.Semaphore, deadline: float | None, model: str):
    if deadline is None:
        async with slots:
            yield
        return
    remaining = deadline - time.time()
    try:
        if remaining <= 0:
            raise asyncio.TimeoutError
        await asyncio.wait_for(slots.acquire(), remaining)
    except asyncio.TimeoutError:
        raise QueueWaitExceeded(f"{model} is busy: the wait for it passed the policy's max_queue_wait_s") from None
    try:
        yield
    finally:
        slots.release()
