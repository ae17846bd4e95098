"""The decision store's tables, for queries (SQLAlchemy Core). The schema itself is made and changed by the
Alembic migrations in migrations/versions/, which `DecisionStore` applies when it opens a store."""
from __future__ import annotations

from sqlalchemy import JSON, Column, Float, ForeignKey, Integer, LargeBinary, MetaData, String, Table, Text

metadata = MetaData()

decisions = Table(
    "decisions", metadata,
    Column("request_id", String(200), primary_key=True),
    Column("at", Float, nullable=False, index=True),          # unix time the answer was given
    Column("session_id", String(200), index=True),
    Column("endpoint", String(40), nullable=False),
    Column("model", String(120)),                             # who answered (None: no candidate did)
    Column("chosen", String(120)),                            # what the router chose first
    Column("rule", String(60), nullable=False),
    Column("task", String(40)),
    Column("policy_version", String(200)),
    Column("profile", String(40)),                            # the policy profile asked for, "auto:NAME" (0004)
    Column("scores", JSON),
    Column("thresholds", JSON),
    Column("fallback", Text),
    Column("cascade", JSON),
    Column("ood_distance", Float),
    Column("latency_s", Float),
    Column("input_tokens", Integer),
    Column("output_tokens", Integer),
    Column("cost", Float),
    Column("prompt_sha256", String(64)),
    Column("prompt_embedding", LargeBinary),                  # float32 little-endian, the router's own embedding
    Column("prompt_embedding_encoder", String(80)),           # which encoder made it (0003); NULL: the catalogue's
    Column("prompt_text", Text),                              # only with store_text on
    Column("response_text", Text),
    Column("response_embedding", LargeBinary),
    Column("response_toxicity", Float),                       # the moderation specialist's P(offensive)
    Column("shadow_policy_version", String(200)),             # the shadow policy's decision (0002), never served
    Column("shadow_model", String(120)),
    Column("shadow_rule", String(60)),
    Column("shadow_scores", JSON),
)

feedback = Table(
    "feedback", metadata,
    Column("request_id", String(200), ForeignKey("decisions.request_id"), primary_key=True),
    Column("at", Float, nullable=False),
    Column("score", Float, nullable=False),                   # 0..1, from `score` or the rating
    Column("rating", String(20)),                             # like, dislike, or 1..5
    Column("comment", Text),
    Column("extra", JSON),                                    # the client's metadata object
)

responses = Table(
    "responses", metadata,                                    # stored Responses API answers (0005)
    Column("response_id", String(64), primary_key=True),
    Column("at", Float, nullable=False, index=True),
    Column("response", JSON, nullable=False),                 # the Response as its client got it
    Column("input_items", JSON, nullable=False),              # the request's input, as input_items lists it
    Column("conversation", JSON, nullable=False),             # chat messages so far, without the instructions
    Column("session_id", String(200)),                        # the session its decisions went under
)

answer_cache = Table(
    "answer_cache", metadata,                                 # the policy's shared answer cache (0006)
    Column("key", String(64), primary_key=True),              # sha256 of everything the model reads, model, policy
    Column("at", Float, nullable=False, index=True),          # unix time the answer was kept: its TTL starts here
    Column("answer", JSON, nullable=False),                   # [model, the result or the stream's deltas]
)
