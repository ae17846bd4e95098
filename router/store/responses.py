"""Stored Responses (OpenAI's Responses API with `store` on), in the decision store's database so that every
ingress replica finds them: the Response as its client got it, the request's input items, and the conversation so
far as chat messages, which a request with `previous_response_id` continues."""
from __future__ import annotations

import time

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine

from router.store.schema import responses
from router.store.store import _json_safe, _text_safe, retention_cutoff


class ResponseStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def keep(self, response: dict, input_items: list[dict], conversation: list[dict],
             session_id: str | None = None) -> None:
        """Written at once, not batched with the decisions: a client's next turn may follow within milliseconds."""
        row = {"response_id": response["id"], "at": time.time(), "response": _json_safe(response),
               "input_items": _json_safe(input_items), "conversation": _json_safe(conversation),
               "session_id": _text_safe(session_id)}
        with self.engine.begin() as connection:
            connection.execute(insert(responses), [row])

    def get(self, response_id: str) -> dict | None:
        """{response, input_items, conversation, session_id}, or None when no such response is stored."""
        query = select(responses).where(responses.c.response_id == _text_safe(response_id))
        with self.engine.connect() as connection:
            found = connection.execute(query).first()
        return dict(found._mapping) if found else None

    def delete(self, response_id: str) -> bool:
        with self.engine.begin() as connection:
            gone = connection.execute(delete(responses).where(responses.c.response_id == _text_safe(response_id)))
        return gone.rowcount > 0

    def prune(self, days: float) -> int:
        """Delete responses older than `days` (the decisions' retention); returns how many went."""
        cutoff = retention_cutoff(days)
        with self.engine.begin() as connection:
            return connection.execute(delete(responses).where(responses.c.at < cutoff)).rowcount
