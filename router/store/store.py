"""DecisionStore: batched writes off the request path, reads by request id, idempotent feedback, retention.

Writes go to a queue that a background thread drains every `batch_interval_s` or `batch_rows` rows; each batch
is one transaction, so a crash loses at most the batch in flight and never leaves half of one. A request id
seen again replaces its row (clients may resend an id). Reads see rows still waiting in the queue. A batch the
database cannot take (it is down) waits in a bounded backlog and is written again every `retry_interval_s`.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError

from router.store.schema import decisions, feedback

logger = logging.getLogger(__name__)
URL_ENV = "ROUTER_STORE_URL"
DEFAULT_URL = f"sqlite:///{Path.home() / '.cache' / 'ensemble-router' / 'decisions.db'}"
MIGRATIONS = Path(__file__).with_name("migrations")


def store_url(configured: str | None = None) -> str:
    """A URL given explicitly (a CLI flag) wins, then the environment variable, then the default. The ingress
    puts the environment before its deployment args itself."""
    return configured or os.environ.get(URL_ENV) or DEFAULT_URL


def open_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        folder = Path(url[len("sqlite:///"):]).expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"store URL {url!r}: cannot create its folder {folder}: {exc}") from None
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except Exception as exc:  # a malformed URL or a missing driver
        raise ValueError(f"store URL {url!r} cannot be used: {exc}") from None
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _wal(dbapi_connection, _):  # concurrent readers beside one writer; durable at each commit
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()
    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision with Alembic (idempotent)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def embedding_encoder_column(engine: Engine, catalogue_encoder: str):
    """decisions.prompt_embedding_encoder for reading, with NULL as `catalogue_encoder`: the rows from before
    migration 0003, when the ingress stored only the catalogue encoder's embeddings. A store not yet migrated
    (readers such as `router monitor` never migrate one) reads as all NULL."""
    from sqlalchemy import String, func, literal

    column = decisions.c.prompt_embedding_encoder
    named = literal(catalogue_encoder, String)
    return (func.coalesce(column, named) if _has_column(engine, column) else named).label(column.name)


def profile_column(engine: Engine):
    """decisions.profile for reading; a store not yet migrated to 0004 reads as all NULL (no profile)."""
    from sqlalchemy import String, cast, null

    column = decisions.c.profile
    return column if _has_column(engine, column) else cast(null(), String).label(column.name)


def _has_column(engine: Engine, column) -> bool:
    from sqlalchemy import inspect

    return column.name in {c["name"] for c in inspect(engine).get_columns(decisions.name)}


def _text_safe(value):
    """PostgreSQL text cannot hold NUL (0x00): U+FFFD in its place, on every backend alike."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _json_safe(value):
    """PostgreSQL's JSON text cannot hold NUL either: U+FFFD in its place, as in the decisions' text."""
    return json.loads(json.dumps(value).replace("\\u0000", "\\ufffd"))


def retention_cutoff(days: float) -> float:
    """The unix time before which rows go, for a retention of `days`; refuses a retention that keeps nothing."""
    if not days > 0:  # nan too
        raise ValueError(f"retention of {days} days: it must be more than 0")
    return time.time() - days * 86400


def _upsert(engine: Engine, table, rows: list[dict]):
    """INSERT ... ON CONFLICT (request_id) DO UPDATE, in the dialect's own words."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(table)
    columns = {c.name: statement.excluded[c.name] for c in table.columns if c.name != "request_id"}
    # every row names every column: a batch's statement is compiled from its first row, which would drop (or
    # demand) the keys of the others
    safe = [{c.name: _text_safe(row.get(c.name)) for c in table.columns} for row in rows]
    return statement.on_conflict_do_update(index_elements=["request_id"], set_=columns), safe


class DecisionStore:
    def __init__(self, url: str | None = None, batch_rows: int = 100, batch_interval_s: float = 0.2,
                 retry_interval_s: float = 2.0, max_backlog: int = 10_000):
        self.url = store_url(url)
        self.engine = open_engine(self.url)
        try:
            migrate(self.engine)
        except Exception as exc:
            raise ValueError(f"store {self.url!r}: cannot open or migrate it: {exc}") from None
        self.batch_rows, self.batch_interval_s = batch_rows, batch_interval_s
        self.retry_interval_s, self.max_backlog = retry_interval_s, max_backlog
        self._queue: queue.Queue = queue.Queue()
        self._pending: dict[str, dict] = {}  # queued or in the backlog: what reads see before the database does
        self._backlog: dict[str, dict] = {}  # rows of batches the database refused as a whole, oldest first
        self._next_retry = 0.0
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # the writer thread and flush() both write the backlog
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="decision-store-writer", daemon=True)
        self._writer.start()

    # --- writes -------------------------------------------------------------------------------------------
    def record(self, row: dict) -> None:
        """Queue one decision row; it is written within `batch_interval_s`. Never blocks on the database."""
        with self._lock:
            self._pending[row["request_id"]] = row
        self._queue.put(row)

    def _write_loop(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            if self._backlog and time.monotonic() >= self._next_retry:
                self._retry_backlog()
            try:
                batch = [self._queue.get(timeout=self.batch_interval_s)]
            except queue.Empty:
                continue
            deadline = time.monotonic() + self.batch_interval_s
            while len(batch) < self.batch_rows and time.monotonic() < deadline:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            self._write(batch)
            for _ in batch:
                self._queue.task_done()

    def _write(self, batch: list[dict]) -> None:
        rows = list({row["request_id"]: row for row in batch}.values())  # the last row of an id wins
        with self._writing:
            try:
                self._upsert_decisions(rows)
            except (DataError, IntegrityError):  # one bad row (too long for PostgreSQL's column) must not lose the rest
                for row in rows:
                    try:
                        self._upsert_decisions([row])
                    except Exception as exc:
                        logger.error("decision store: row %s not written: %s", row["request_id"], exc)
            except Exception as exc:  # the database is down: keep serving, and write these rows when it is back
                self._keep(rows, exc)
                return
            with self._lock:  # a row written now supersedes an older one of the same id in the backlog
                for row in rows:
                    self._backlog.pop(row["request_id"], None)
        self._written(rows)

    def _keep(self, rows: list[dict], exc: Exception) -> None:
        with self._lock:
            for row in rows:
                self._backlog.pop(row["request_id"], None)
                self._backlog[row["request_id"]] = row
            dropped = [self._backlog.pop(k) for k in list(self._backlog)[:max(0, len(self._backlog) - self.max_backlog)]]
        self._next_retry = time.monotonic() + self.retry_interval_s
        logger.error("decision store: %d rows wait for the database (%d in all), %d oldest dropped: %s",
                     len(rows), len(self._backlog), len(dropped), exc)
        self._written(dropped)

    def _retry_backlog(self) -> None:
        with self._writing:
            with self._lock:
                rows = list(self._backlog.values())
            if not rows:
                return
            try:
                for start in range(0, len(rows), self.batch_rows):
                    self._upsert_decisions(rows[start:start + self.batch_rows])
            except Exception as exc:
                self._next_retry = time.monotonic() + self.retry_interval_s
                logger.warning("decision store: %d rows still wait for the database: %s", len(rows), exc)
                return
            with self._lock:
                for row in rows:
                    if self._backlog.get(row["request_id"]) is row:
                        del self._backlog[row["request_id"]]
        logger.info("decision store: %d rows written after the database came back", len(rows))
        self._written(rows)

    def _written(self, rows: list[dict]) -> None:
        """Rows that reads need no longer find in memory: written, or given up."""
        with self._lock:
            for row in rows:
                if self._pending.get(row["request_id"]) is row:
                    del self._pending[row["request_id"]]

    def _upsert_decisions(self, rows: list[dict]) -> None:
        statement, values = _upsert(self.engine, decisions, rows)
        with self.engine.begin() as connection:
            connection.execute(statement, values)

    def flush(self) -> None:
        """Wait until every queued row is written, and try the backlog once (it stays when the database is down)."""
        self._queue.join()
        if self._backlog:
            self._retry_backlog()

    def close(self) -> None:
        self._stop.set()
        self._writer.join(timeout=10)
        if self._backlog:
            self._retry_backlog()
            if self._backlog:
                logger.error("decision store: closed with %d rows the database never took", len(self._backlog))
        self.engine.dispose()

    # --- reads and feedback -------------------------------------------------------------------------------
    def decision(self, request_id: str) -> dict | None:
        with self._lock:
            if request_id in self._pending:
                return dict(self._pending[request_id])
        query = select(decisions).where(decisions.c.request_id == _text_safe(request_id))
        with self.engine.connect() as connection:
            found = connection.execute(query).first()
        return dict(found._mapping) if found else None

    def rate(self, request_id: str, score: float, rating: str | None = None, comment: str | None = None,
             extra: dict | None = None) -> None:
        """Feedback on one answer; rating the same request again replaces the earlier rating."""
        with self._lock:
            waiting = request_id in self._pending
        if waiting:
            self.flush()  # the decision row must exist before its feedback refers to it
        statement, rows = _upsert(self.engine, feedback, [{"request_id": request_id, "at": time.time(), "score": score,
                                                           "rating": rating, "comment": comment, "extra": extra}])
        with self.engine.begin() as connection:
            connection.execute(statement, rows)

    def session_models(self, session_id: str, since: float) -> set[str]:
        """The models that answered this session's requests since `since`, from any ingress replica."""
        with self._lock:
            used = {r["model"] for r in self._pending.values()
                    if r.get("session_id") == session_id and r["at"] >= since and r.get("model")}
        query = select(decisions.c.model).distinct().where(decisions.c.session_id == _text_safe(session_id),
                                                           decisions.c.at >= since, decisions.c.model.is_not(None))
        with self.engine.connect() as connection:
            return used | {m for (m,) in connection.execute(query)}

    def feedback_for(self, request_id: str) -> dict | None:
        request_id = _text_safe(request_id)
        with self.engine.connect() as connection:
            found = connection.execute(select(feedback).where(feedback.c.request_id == request_id)).first()
        return dict(found._mapping) if found else None

    def rows(self, since: float | None = None) -> list[dict[str, Any]]:
        """Every decision (with its feedback, when there is one) from `since` on, oldest first."""
        query = select(decisions, feedback.c.score.label("feedback_score"), feedback.c.rating) \
            .join(feedback, feedback.c.request_id == decisions.c.request_id, isouter=True).order_by(decisions.c.at)
        if since is not None:
            query = query.where(decisions.c.at >= since)
        with self.engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(query)]

    def prune(self, days: float) -> int:
        """Delete decisions (and their feedback) older than `days`; returns how many decisions went."""
        cutoff = retention_cutoff(days)
        old = select(decisions.c.request_id).where(decisions.c.at < cutoff)
        with self.engine.begin() as connection:
            connection.execute(delete(feedback).where(feedback.c.request_id.in_(old)))
            return connection.execute(delete(decisions).where(decisions.c.at < cutoff)).rowcount
