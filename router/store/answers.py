"""The answer cache shared by every ingress replica (the policy's `cache.shared`), in the decision store's
database: one read per cacheable request, one write per miss. Its entries age from when they were kept (no
least-recently-used refresh, which would be a write per hit); past `max_entries` the oldest go."""
from __future__ import annotations

import time

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Engine

from router.store.schema import answer_cache
from router.store.store import _json_safe, retention_cutoff

TRIM_EVERY = 32  # puts between trims to max_entries: a trim reads up to max_entries index entries


class SharedAnswers:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._puts = 0

    def get(self, key: str, ttl_s: float):
        """The answer kept under `key` within the last `ttl_s` seconds, else None."""
        query = select(answer_cache.c.answer).where(answer_cache.c.key == key, answer_cache.c.at >= time.time() - ttl_s)
        with self.engine.connect() as connection:
            return connection.execute(query).scalar()

    def put(self, key: str, answer, ttl_s: float, max_entries: int) -> None:
        """Keep `answer` (JSON: NUL characters become U+FFFD, as in the store's text) and drop expired entries."""
        row = {"key": key, "at": time.time(), "answer": _json_safe(answer)}
        with self.engine.begin() as connection:
            connection.execute(delete(answer_cache).where(answer_cache.c.key == key))  # a racing replica's copy
            connection.execute(insert(answer_cache), [row])
            connection.execute(delete(answer_cache).where(answer_cache.c.at < row["at"] - ttl_s))
        self._puts += 1
        if self._puts % TRIM_EVERY == 1 or max_entries < TRIM_EVERY:
            self.trim(max_entries)

    def trim(self, max_entries: int) -> int:
        """Drop all but the newest `max_entries`; returns how many went."""
        newest = select(answer_cache.c.at).order_by(answer_cache.c.at.desc()).offset(max_entries - 1).limit(1)
        with self.engine.begin() as connection:
            oldest_kept = connection.execute(newest).scalar()
            if oldest_kept is None:
                return 0
            return connection.execute(delete(answer_cache).where(answer_cache.c.at < oldest_kept)).rowcount

    def prune(self, days: float) -> int:
        """Delete answers kept more than `days` ago (with the decisions' retention); returns how many went."""
        cutoff = retention_cutoff(days)
        with self.engine.begin() as connection:
            return connection.execute(delete(answer_cache).where(answer_cache.c.at < cutoff)).rowcount

    def __len__(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(answer_cache)).scalar()
