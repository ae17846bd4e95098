"""The decision store on PostgreSQL (a throwaway server from tests/pg_fixture.py) and, side by side, on SQLite:
Alembic makes the schema, every column round-trips, a request id upserts, a second rating replaces the first,
reads join feedback, retention prunes. The last test sends real answers through the Serve ensemble into
PostgreSQL (marked serve: it starts the real models)."""
import time

import httpx
import numpy as np
import openai
import pytest
from alembic.script import ScriptDirectory
from pg_fixture import postgres_server, postgres_url  # noqa: F401  (fixtures)
from sqlalchemy import JSON, Float, Integer, LargeBinary, String, create_engine, inspect, text

from router.store import DecisionStore
from router.store.schema import answer_cache, decisions, feedback, responses
from router.store.store import MIGRATIONS, URL_ENV

DIALECT = {"sqlite": "sqlite", "postgres": "postgresql"}


@pytest.fixture(params=list(DIALECT))
def url(request, tmp_path, monkeypatch):
    monkeypatch.delenv(URL_ENV, raising=False)  # the variable would win over the URL under test
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'decisions.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(url, request):
    opened = DecisionStore(url, batch_interval_s=0.05)
    assert opened.engine.dialect.name == DIALECT[request.node.callspec.params["url"]]
    yield opened
    opened.close()


def row(request_id: str, at: float | None = None, **extra) -> dict:
    return {"request_id": request_id, "at": at or time.time(), "endpoint": "chat.completions", "rule": "r",
            "model": "m", "scores": {"m": 0.5}, **extra}


def full_row(request_id: str) -> dict:
    """A value for every column of the decisions table, strings at their full declared length."""
    values = {}
    for column in decisions.columns:
        kind = column.type
        if isinstance(kind, JSON):
            values[column.name] = {"m": 0.8125, "list": [1, "zwei", None, True], "ünï": "cödé ✓"}
        elif isinstance(kind, LargeBinary):  # the router's float32 embedding: 0x00 bytes included
            values[column.name] = np.linspace(-1, 1, 384, dtype="<f4").tobytes()
        elif isinstance(kind, Integer):
            values[column.name] = 2**31 - 1
        elif isinstance(kind, Float):
            values[column.name] = 0.1234567890123456
        elif isinstance(kind, String):  # Text included; VARCHAR(n) counts characters on PostgreSQL
            filler = f"{column.name} ünïcödé ✓ 'quoted' \"double\"\nline two "
            values[column.name] = (filler * 10)[:kind.length] if kind.length else filler * 50
    values["request_id"] = (request_id + "-" * 200)[:decisions.c.request_id.type.length]
    values["at"] = time.time()
    return values


def test_opening_a_store_migrates_the_schema_to_head(url):
    DecisionStore(url).close()
    DecisionStore(url).close()  # a second open finds the schema at head and leaves it be
    engine = create_engine(url)
    try:
        found = inspect(engine)
        for table in (decisions, feedback, responses, answer_cache):
            assert {c["name"] for c in found.get_columns(table.name)} == set(table.c.keys()), table.name
        indexed = {tuple(i["column_names"]) for i in found.get_indexes("decisions")}
        assert {("at",), ("session_id",)} <= indexed  # rows(since) and session_models read by these
        assert [fk["referred_table"] for fk in found.get_foreign_keys("feedback")] == ["decisions"]
        with engine.connect() as connection:
            version = connection.execute(text("select version_num from alembic_version")).scalar_one()
        assert version == ScriptDirectory(str(MIGRATIONS)).get_current_head()
    finally:
        engine.dispose()


def test_every_column_round_trips(store):
    written = full_row("every-column")
    store.record(written)
    store.flush()
    got = store.decision(written["request_id"])
    assert got == written
    assert np.frombuffer(got["prompt_embedding"], "<f4").shape == (384,)


def test_a_row_from_decision_row_round_trips(store):
    from router.decision import Decision
    from router.serving.feedback import RequestContext, decision_row

    decision = Decision(model="smollm2-135m", rule="cheapest_confident", reason="confident", task="chat",
                        input_tokens=5, scores={"smollm2-135m": np.float32(0.75), "qwen2.5-coder-1.5b": 0.9},
                        thresholds={"smollm2-135m": 0.65}, ood_distance=0.125)
    asked = RequestContext("req-from-serving", "Hi! How are you today?", "chat.completions", "conversation-1",
                           np.random.default_rng(0).random(384, dtype=np.float32), "minilm-l6-v2-static")
    written = decision_row(asked=asked, decision=decision, model="smollm2-135m", fallback=None, tokens_in=5,
                           tokens_out=7, cost=1.5e-6, cascade=[{"model": "smollm2-135m", "p": 0.75}],
                           policy_version="v1", answer="Fine, thanks!", keep_text=True)
    assert set(written) <= set(decisions.c.keys())
    store.record(written)
    store.flush()
    got = store.decision("req-from-serving")
    assert {k: got[k] for k in written} == written
    assert np.array_equal(np.frombuffer(got["prompt_embedding"], "<f4"), asked.embedding)
    assert got["prompt_embedding_encoder"] == "minilm-l6-v2-static"


def test_a_request_id_seen_again_replaces_its_row(store):
    store.record(full_row("again"))
    store.record(row(full_row("again")["request_id"], model="first"))  # most likely the same batch: the last row wins
    store.flush()
    again = full_row("again")["request_id"]
    assert store.decision(again)["model"] == "first"
    store.record(row(again, model="second"))  # a later batch: the row is replaced whole, not merged
    store.flush()
    got = store.decision(again)
    assert (got["model"], got["prompt_text"], got["cascade"]) == ("second", None, None)
    assert [r["request_id"] for r in store.rows()] == [again]


def test_rating_again_replaces_the_rating(store):
    store.record(row("rated"))  # still queued: rate() writes it first, the feedback row refers to it
    store.rate("rated", 1.0, "like")
    store.rate("rated", 0.0, "dislike", "wrong", {"ui": "thumbs", "ünï": [1, 2]})
    got = store.feedback_for("rated")
    assert (got["score"], got["rating"], got["comment"], got["extra"]) == (0.0, "dislike", "wrong",
                                                                          {"ui": "thumbs", "ünï": [1, 2]})
    assert [(r["feedback_score"], r["rating"]) for r in store.rows()] == [(0.0, "dislike")]


def test_a_sessions_models_come_from_queued_and_written_rows(store):
    store.record(row("s1", session_id="conv", model="coder"))
    assert store.session_models("conv", since=0) == {"coder"}  # still queued on this replica
    store.flush()
    store.record(row("s2", session_id="conv", model="tiny"))
    store.record(row("s3", session_id="other", model="large"))
    store.record(row("s4", session_id="conv", model="large", at=time.time() - 7200))  # too old
    store.record(row("s5", session_id="conv", model=None))  # no candidate answered
    assert store.session_models("conv", since=time.time() - 3600) == {"coder", "tiny"}
    store.flush()
    assert store.session_models("conv", since=time.time() - 3600) == {"coder", "tiny"}


def test_rows_join_feedback_oldest_first_from_since(store):
    now = time.time()
    for i, at in enumerate((now - 300, now - 200, now - 100)):
        store.record(row(f"j{i}", at=at))
    store.rate("j1", 0.75, "4", "close")
    rows = store.rows()
    assert [(r["request_id"], r["feedback_score"], r["rating"]) for r in rows] == \
        [("j0", None, None), ("j1", 0.75, "4"), ("j2", None, None)]
    assert rows[1]["scores"] == {"m": 0.5} and rows[1]["endpoint"] == "chat.completions"
    assert [r["request_id"] for r in store.rows(since=now - 150)] == ["j2"]


def test_prune_deletes_old_decisions_and_their_feedback(store):
    store.record(row("old", at=time.time() - 10 * 86400))
    store.record(row("old-unrated", at=time.time() - 8 * 86400))
    store.record(row("new"))
    store.rate("old", 1.0)
    store.rate("new", 0.0)
    assert store.prune(7) == 2
    assert store.decision("old") is None and store.feedback_for("old") is None
    assert store.decision("new") and store.feedback_for("new")["score"] == 0.0
    assert store.prune(7) == 0
    with pytest.raises(ValueError, match="must be more than 0"):
        store.prune(0)


def test_stored_responses_round_trip_and_are_pruned(store):
    from router.serving.response_output import input_item_objects, response_object
    from router.serving.responses import ResponsesRequest
    from router.store.responses import ResponseStore

    kept, body = ResponseStore(store.engine), ResponsesRequest(input="hi \x00 there", instructions="be brief")
    answer = response_object("m", body, "nul \x00 here", "stop", 5, 3, {"answered_by": "m"})
    kept.keep(answer, input_item_objects(body), body.conversation_after(answer["output"]), "conv-\x001")
    found = kept.get(answer["id"])
    assert found["session_id"] == "conv-\ufffd1" and answer["id"] == body.response_id
    assert found["response"]["output"][0]["content"][0]["text"] == "nul \ufffd here"  # PostgreSQL takes no NUL
    assert found["conversation"] == [{"role": "user", "content": "hi \ufffd there"},
                                     {"role": "assistant", "content": "nul \ufffd here"}]
    assert found["input_items"][0]["content"][0]["text"] == "hi \ufffd there" and kept.get("resp_none\x00") is None
    assert kept.delete(answer["id"]) and kept.get(answer["id"]) is None and not kept.delete(answer["id"])
    kept.keep(answer, [], [])
    assert kept.prune(1) == 0 and kept.get(answer["id"]) is not None
    with store.engine.begin() as connection:  # kept two days ago
        connection.execute(responses.update().values(at=time.time() - 2 * 86400))
    assert kept.prune(1) == 1 and kept.get(answer["id"]) is None
    with pytest.raises(ValueError, match="must be more than 0"):
        kept.prune(0)


def test_the_shared_answer_cache_keeps_expires_trims_and_prunes(store):
    from router.store.answers import SharedAnswers

    shared = SharedAnswers(store.engine)
    answer = ["m", {"text": "nul \x00 here", "finish_reason": "stop", "input_tokens": 3, "output_tokens": 2}]
    shared.put("k1", answer, ttl_s=600, max_entries=10)
    assert shared.get("k1", 600) == ["m", {**answer[1], "text": "nul \ufffd here"}] and shared.get("k2", 600) is None
    shared.put("k1", ["other", [{"text": "a"}]], ttl_s=600, max_entries=10)  # a second keep replaces the first
    assert shared.get("k1", 600) == ["other", [{"text": "a"}]] and len(shared) == 1
    with store.engine.begin() as connection:  # kept 20 minutes ago
        connection.execute(answer_cache.update().values(at=time.time() - 1200))
    assert shared.get("k1", 600) is None and shared.get("k1", 3600) is not None
    shared.put("k2", answer, ttl_s=600, max_entries=10)  # a keep drops what has expired under its TTL
    assert shared.get("k1", 3600) is None and len(shared) == 1
    for i in range(5):
        shared.put(f"n{i}", answer, ttl_s=600, max_entries=3)  # fewer than TRIM_EVERY: trimmed at each keep
    assert len(shared) == 3 and shared.get("n4", 600) and shared.get("n0", 600) is None
    assert shared.prune(1) == 0 and shared.trim(3) == 0
    with store.engine.begin() as connection:  # kept two days ago
        connection.execute(answer_cache.update().values(at=time.time() - 2 * 86400))
    assert shared.prune(1) == 3 and len(shared) == 0


def test_rows_with_different_keys_share_a_batch(store):
    store.record(row("plain"))  # the batch's first row lacks keys that later rows have, and the other way round
    store.record(row("with-session", session_id="conv", prompt_text="hello"))
    store.record(row("plain-again"))
    store.flush()
    assert (store.decision("with-session")["session_id"], store.decision("with-session")["prompt_text"]) == \
        ("conv", "hello")
    assert store.decision("plain")["session_id"] is None and store.decision("plain-again")


def test_one_row_the_database_refuses_does_not_lose_its_batch(store):
    store.record(row("before"))
    store.record(row("too-long", session_id="s" * 300))  # over VARCHAR(200): PostgreSQL refuses it, SQLite keeps it
    store.record(row("after"))
    store.flush()
    assert store.decision("before") and store.decision("after")
    if store.engine.dialect.name == "postgresql":
        assert store.decision("too-long") is None


def test_a_nul_in_text_is_kept_as_a_replacement_character(store):
    # PostgreSQL text cannot hold NUL: without the replacement the row (and its batch) would be lost
    store.record(row("nul", session_id="conv\x00x", prompt_text="a\x00b"))
    store.flush()
    assert store.decision("nul")["prompt_text"] == "a\ufffdb"
    assert store.session_models("conv\x00x", since=0) == {"m"}
    store.rate("nul", 1.0, "like", "ok\x00?")
    assert store.feedback_for("nul")["comment"] == "ok\ufffd?"
    assert store.decision("never\x00seen") is None and store.feedback_for("never\x00seen") is None


def test_an_unreachable_postgres_is_named(monkeypatch):
    monkeypatch.delenv(URL_ENV, raising=False)
    unreachable = "postgresql+psycopg://router@127.0.0.1:1/decisions"
    with pytest.raises(ValueError, match="cannot open or migrate it") as raised:
        DecisionStore(unreachable)
    assert unreachable in str(raised.value)


def take_away(server, url: str):
    """An outage of one database: no new connections, and its open ones ended. Returns the undo."""
    name = url.rsplit("/", 1)[1]
    server.admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    server.admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    return lambda: server.admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_rows_recorded_while_the_database_is_down_are_written_when_it_is_back(postgres_server, postgres_url,
                                                                              monkeypatch):
    monkeypatch.delenv(URL_ENV, raising=False)
    store = DecisionStore(postgres_url, batch_interval_s=0.05, retry_interval_s=0.1, max_backlog=3)
    try:
        store.record(row("before"))
        store.flush()
        bring_back = take_away(postgres_server, postgres_url)
        try:
            for i in range(4):  # one more than the backlog holds: the oldest is given up
                store.record(row(f"during-{i}", at=time.time() + i))
            store.flush()  # tries the backlog once, and neither raises nor blocks while the database is down
            assert store.decision("during-3")["request_id"] == "during-3"  # reads see the rows still waiting
        finally:
            bring_back()
        store.flush()
        assert store.decision("during-0") is None
        reader = DecisionStore(postgres_url)
        try:
            assert [r["request_id"] for r in reader.rows()] == ["before", "during-1", "during-2", "during-3"]
        finally:
            reader.close()
    finally:
        store.close()


@pytest.mark.serve
def test_the_ingress_writes_answers_and_feedback_into_postgres(ensemble, client, postgres_server, postgres_url,
                                                                monkeypatch):
    """Redeploy the session's ingress with ROUTER_STORE_URL set to PostgreSQL for its replica only (Ray's
    runtime_env: the model replicas keep running), answer, rate, take the database away and back, then put the
    SQLite store back."""
    from router.serving.live import INGRESS, config_with_policy, deploy_config
    from router.serving.local_ensemble import http_ok, metric_value, serve_config, wait_for

    def deploy(env_vars: dict | None, policy: dict, restarts: bool = True) -> None:
        before = ensemble.policy()
        config = config_with_policy(serve_config(ensemble.port), policy)
        ingress = next(d for app in config["applications"] for d in app["deployments"] if d["name"] == INGRESS)
        if env_vars:
            ingress["ray_actor_options"] = {**ingress.get("ray_actor_options", {}),
                                            "runtime_env": {"env_vars": env_vars}}
        deploy_config(config, ensemble.dashboard)

        def replaced() -> bool:  # a new replica answers, three times in a row (the old one has drained)
            try:
                return all(ensemble.policy()["replica_pid"] != before["replica_pid"] for _ in range(3))
            except (httpx.HTTPError, ValueError, KeyError):
                return False
        if restarts:
            wait_for(replaced, 300, "the ingress to restart with its new store", interval=1)
        wait_for(lambda: http_ok(f"{ensemble.base}/healthz"), 120, "the ensemble to be ready again")

    monkeypatch.delenv(URL_ENV, raising=False)
    store = DecisionStore(postgres_url)  # migrates the schema before the ingress opens it too
    switched, original = False, ensemble.policy()["policy"]
    try:  # with the answer cache shared through the same database
        deploy({URL_ENV: postgres_url}, {**original, "version": "pg-shared-cache",
                                         "cache": {"enabled": True, "ttl_s": 600, "max_entries": 64, "shared": True}})
        switched = True
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "Hi! How are you today?"}], max_tokens=8,
            temperature=0, extra_headers={"x-session-id": "pg-conversation"})
        completion, request_id = raw.parse(), raw.headers["x-request-id"]
        got = wait_for(lambda: store.decision(request_id), 30, "the decision row in PostgreSQL")
        assert (got["model"], got["session_id"], got["endpoint"]) == (completion.model, "pg-conversation",
                                                                      "chat.completions")
        assert len(got["prompt_embedding"]) == 384 * 4 and got["scores"] and got["input_tokens"] > 0
        reply = httpx.post(f"{ensemble.base}/v1/feedback", json={"request_id": request_id, "rating": "like"},
                           timeout=30)
        assert reply.status_code == 200, reply.text
        assert (store.feedback_for(request_id)["score"], store.feedback_for(request_id)["rating"]) == (1.0, "like")
        assert store.session_models("pg-conversation", since=0) == {completion.model}
        colour = {"model": "smollm2-135m", "input": "Name a colour.", "max_output_tokens": 4, "temperature": 0}
        kept = client.responses.create(**colour)
        assert kept.store is True and client.responses.retrieve(kept.id).output_text == kept.output_text

        # a database outage: the session's answer still comes (without its floor), a rating is a 503 to retry,
        # and the answer's row reaches the database once it is back
        bring_back = take_away(postgres_server, postgres_url)
        try:
            during = client.with_options(max_retries=0).chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": "And what is two plus two?"}], max_tokens=4,
                temperature=0, extra_headers={"x-session-id": "pg-conversation"})
            assert during.parse().choices[0].message.content is not None
            assert during.headers["x-router-cache"] == "miss"  # the shared cache is unreadable: a miss, answered
            refused = httpx.post(f"{ensemble.base}/v1/feedback", json={"request_id": request_id, "rating": "dislike"},
                                 timeout=30)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "store_unavailable"
            assert "retry" in refused.json()["error"]["message"]
            # a response is answered but cannot be kept, and one cannot be continued: a 503 to retry, not a 404
            assert client.with_options(max_retries=0).responses.create(**colour).store is False
            with pytest.raises(openai.APIStatusError) as unreadable:
                client.with_options(max_retries=0).responses.create(**colour, previous_response_id=kept.id)
            assert (unreadable.value.status_code, unreadable.value.body["code"]) == (503, "store_unavailable")
        finally:
            bring_back()
        assert wait_for(lambda: store.decision(during.headers["x-request-id"]), 30,
                        "the row answered during the outage, in PostgreSQL")["session_id"] == "pg-conversation"
        retried = httpx.post(f"{ensemble.base}/v1/feedback", json={"request_id": request_id, "rating": "dislike"},
                             timeout=30)
        assert retried.status_code == 200, retried.text
        assert store.feedback_for(request_id)["rating"] == "dislike"
        assert client.responses.create(**colour, previous_response_id=kept.id).store is True
        greedy = {"model": "auto", "messages": [{"role": "user", "content": "Name a fruit."}], "max_tokens": 4,
                  "temperature": 0}
        asked = [client.chat.completions.with_raw_response.create(**greedy) for _ in range(2)]
        assert [a.headers["x-router-cache"] for a in asked] == ["miss", "hit"]  # kept in PostgreSQL
        wait_for(lambda: metric_value(httpx.get(ensemble.metrics, timeout=10).text, "ray_router_answer_cache",
                                      result="unavailable"), 120, "the outage's lookup in the metrics", interval=2)
    finally:
        store.close()
        # back to the session's SQLite store (the ROUTER_STORE_URL the workers inherited); a replica that never
        # switched is already the original one, and Serve leaves it running
        deploy(None, original, restarts=switched)
