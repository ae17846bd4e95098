"""Answers kept for requests that would get the same answer again: greedy (temperature 0), and alike in everything
the model reads (messages, tools, format, sampling, max_tokens), in the routed model and the policy version (so an
edit starts afresh), and in being streamed or not: a streamed answer is kept as the model's deltas and given again
as a stream. Per ingress replica, in memory, least recently used first out (with `cache.shared`, in the
decision store's database for every replica); the policy's `cache` section turns it on and sizes it. A hit skips
only the generation: the request is still checked, decided and recorded like any other (its cost is 0)."""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict

logger = logging.getLogger("ray.serve")
# x-router-cache for each lookup result: a client sees a failed shared cache as a miss (the metrics tell them apart)
CACHE_HEADER = {"hit": "hit", "miss": "miss", "bypass": "bypass", "unavailable": "miss"}


def cache_key(model: str, generation: dict, policy_version: str, streamed: bool = False) -> str | None:
    """The key of a cacheable request, or None (sampled: its answer is not one fixed text). A streamed request's
    key differs from the same request's whole one, since its answer is kept in another shape."""
    if generation.get("temperature", 1.0) != 0:
        return None
    canonical = json.dumps({"model": model, "policy": policy_version, "generation": generation,
                            "streamed": streamed}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def cache_directives(cache_control: str | None) -> tuple[bool, bool]:
    """(may read, may write) the answer cache, from a request's Cache-Control header as an HTTP cache reads its
    request directives (RFC 9111, 5.2.1): no-cache asks for a fresh answer, which is then kept; no-store keeps
    nothing of this request, and reads nothing either."""
    directives = {part.split("=", 1)[0].strip().lower() for part in (cache_control or "").split(",")}
    return not directives & {"no-cache", "no-store"}, "no-store" not in directives


class AnswerCache:
    def __init__(self, clock=time.monotonic):
        self._entries: OrderedDict[str, tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()
        self._clock = clock

    def get(self, key: str | None, ttl_s: float):
        """The answer kept under `key` within the last `ttl_s` seconds, else None."""
        if key is None:
            return None
        with self._lock:
            found = self._entries.get(key)
            if found is None or self._clock() - found[0] > ttl_s:
                self._entries.pop(key, None)
                return None
            self._entries.move_to_end(key)
            return found[1]

    def put(self, key: str | None, answer, max_entries: int) -> None:
        if key is None:
            return
        with self._lock:
            self._entries[key] = (self._clock(), answer)
            self._entries.move_to_end(key)
            while len(self._entries) > max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class RecordedDeltas:
    """A model's stream passed through as it comes, keeping its deltas so that a stream that ends well is cached."""

    def __init__(self, first: dict | None, deltas):
        self.kept = [] if first is None else [first]
        self._deltas = deltas

    def __aiter__(self):
        return self

    async def __anext__(self) -> dict:
        delta = await self._deltas.__anext__()
        self.kept.append(delta)
        return delta

    def cancel(self) -> None:  # the client left: stop the model (ModelStreamResponse)
        self._deltas.cancel()


class ReplayedDeltas:
    """A cached stream's deltas given again in the model stream's own shape, so every endpoint renders them alike."""

    def __init__(self, deltas: list[dict]):
        self._deltas = iter(deltas)

    def __aiter__(self):
        return self

    async def __anext__(self) -> dict:
        try:
            return next(self._deltas)
        except StopIteration:
            raise StopAsyncIteration from None

    def cancel(self) -> None:  # nothing generates
        pass


class PolicyAnswerCache:
    """The policy's `cache` for one ingress replica: this replica's memory, or with `cache.shared` the database
    every replica reads (`shared`: a router.store.answers.SharedAnswers), where a failure costs the cache, never the
    answer."""

    def __init__(self, shared):
        self.local, self.shared = AnswerCache(), shared

    @staticmethod
    def key(model: str, generation: dict, policy, cache_control: str | None, streamed: bool) -> str | None:
        """The request's key; None with the cache off, or when the client's Cache-Control says no-store."""
        if not policy.cache.enabled or not cache_directives(cache_control)[1]:
            return None
        return cache_key(model, generation, policy.version, streamed)

    async def lookup(self, key: str | None, policy, cache_control: str | None) -> tuple:
        """(the answer kept under `key`, as (model, result or a stream's deltas), or None; the lookup's result for
        the metrics: hit, miss, bypass (the client's Cache-Control said no-cache) or unavailable)."""
        if key is None:
            return None, None
        if not cache_directives(cache_control)[0]:
            return None, "bypass"
        if not policy.cache.shared:
            found = self.local.get(key, policy.cache.ttl_s)
        else:
            try:
                found = await asyncio.to_thread(self.shared.get, key, policy.cache.ttl_s)
            except Exception as exc:
                logger.warning("the shared answer cache could not be read, so this request is a miss: %s", exc)
                return None, "unavailable"
        return found, "miss" if found is None else "hit"

    def keep(self, key: str | None, answer: tuple, policy):
        """Keep an answer in memory, or with `cache.shared` in the database, written off the event loop (the
        write's future is returned)."""
        if key is None:
            return None
        if not policy.cache.shared:
            return self.local.put(key, answer, policy.cache.max_entries)
        return asyncio.get_running_loop().run_in_executor(None, self._keep_shared, key, answer, policy)

    def _keep_shared(self, key: str, answer: tuple, policy) -> None:
        try:
            self.shared.put(key, answer, policy.cache.ttl_s, policy.cache.max_entries)
        except Exception as exc:  # a database outage costs the cache, never the answer
            logger.warning("the shared answer cache could not keep an answer: %s", exc)
