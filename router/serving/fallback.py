"""The fallback chain's walk: each candidate model in turn, bounded by its own timeout and by what is left of the
request's, until one gives an answer the caller accepts."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import NamedTuple

from ray.serve.exceptions import BackPressureError

from models.backend import RequestRefused
from router.serving.errors import current_request_id, error_response
from router.serving.queueing import is_queue_wait

logger = logging.getLogger("ray.serve")


class Failure(NamedTuple):
    """One candidate that did not answer: its model, the kind (timeout, refused or error) and the message for
    clients."""
    model: str
    kind: str
    message: str


def attempt_timeout(model_timeout: float | None, deadline: float | None) -> float | None:
    """The tighter of a model's own timeout and the time left before the request's deadline (None: unbounded)."""
    bounds = [t for t in (model_timeout, None if deadline is None else deadline - time.monotonic()) if t is not None]
    return min(bounds) if bounds else None


async def first_answer(chain: list[str], policy, call, accept=None):
    """Try each model of `chain` in turn: `await call(model)`, bounded by the model's timeout_s and by what is
    left of the policy's limits.max_request_s (a Serve call to a deployment with no replica waits forever). A
    timeout or a failure moves on to the next model, and so does a result that accept(position, model, result)
    turns down. Returns (model, result, failures), or an error response: 503 with Retry-After when a model is at
    capacity, or when none answered (replicas restarting after a fault are the usual cause, so a retry helps)."""
    failures = []
    request_s = policy.limits.max_request_s
    deadline = None if request_s is None else time.monotonic() + request_s
    for position, model in enumerate(chain):
        timeout = attempt_timeout(policy.models[model].timeout_s, deadline)
        if timeout is not None and timeout <= 0:
            failures.append(Failure(model, "timeout", f"{model} not tried: the request used its "
                                                      f"max_request_s ({request_s:g}s)"))
            break
        try:
            result = await asyncio.wait_for(call(model), timeout)
        except BackPressureError:  # past capacity: tell the client to retry rather than pile onto another model
            return error_response(503, f"{model} is at capacity; retry shortly", "server_error", code="overloaded",
                                  headers={"retry-after": "1"})
        except asyncio.TimeoutError:
            own = policy.models[model].timeout_s
            failures.append(Failure(model, "timeout", f"{model} timed out after {own:g}s" if own == timeout else
                                    f"{model} timed out: the request used its max_request_s ({request_s:g}s)"))
        except Exception as exc:
            if is_queue_wait(exc):  # busy past the policy's bound: a fast 503, as for a full queue
                bound = policy.limits.max_queue_wait_s or 1
                return error_response(503, f"{model} is busy: the wait for it passed the policy's max_queue_wait_s "
                                           f"({bound:g}s); retry shortly", "server_error",
                                      code="queue_wait_exceeded", headers={"retry-after": str(max(1, round(bound / 2)))})
            if isinstance(exc, RequestRefused):  # the model's own words are the client's to read, in full
                failures.append(Failure(model, "refused", f"{getattr(exc, 'cause', exc)}"))
            else:
                failures.append(Failure(model, "error", f"{model} failed: {type(exc).__name__}: {str(exc)[:120]}"))
        else:
            if accept is None or accept(position, model, result):
                return model, result, failures
            continue
        logger.warning("request %s: %s", current_request_id(), failures[-1].message)
    if failures and all(f.kind == "refused" for f in failures):  # a client error: a retry would be refused too
        return error_response(400, "every candidate model refused the request: " +
                              "; ".join(f.message for f in failures))
    return error_response(503, "every candidate model failed: " + "; ".join(f.message for f in failures),
                          "server_error", code="no_model_answered", headers={"retry-after": "2"})
