"""The decision store behind /v1/feedback (a real SQLite file): batched writes, reads by request id that see
rows still queued, idempotent ratings, retention; and the feedback body's validation."""
import sqlite3
import time

import pytest
from pydantic import ValidationError

from router.serving.feedback import FeedbackRequest
from router.store import DecisionStore


def row(request_id: str, at: float | None = None, **extra) -> dict:
    return {"request_id": request_id, "at": at or time.time(), "endpoint": "chat.completions", "rule": "r",
            "model": "m", "scores": {"m": 0.5}, **extra}


@pytest.fixture
def store(tmp_path):
    opened = DecisionStore(f"sqlite:///{tmp_path / 'decisions.db'}", batch_interval_s=0.05)
    yield opened
    opened.close()


def test_rows_are_written_in_batches_and_readable_before_and_after(store, tmp_path):
    for i in range(250):
        store.record(row(f"r{i}"))
    assert store.decision("r249")["model"] == "m"  # still queued, or written: either way it is found
    store.flush()
    with sqlite3.connect(tmp_path / "decisions.db") as raw:
        assert raw.execute("select count(*) from decisions").fetchone()[0] == 250
        assert raw.execute("pragma journal_mode").fetchone()[0] == "wal"
    store.record(row("r0", model="other"))  # a resent request id replaces its row
    store.flush()
    assert store.decision("r0")["model"] == "other" and store.decision("never") is None


def test_rating_again_replaces_the_rating(store):
    store.record(row("a"))
    store.rate("a", 1.0, "like")
    store.rate("a", 0.0, "dislike", "wrong", {"ui": "thumbs"})
    got = store.feedback_for("a")
    assert (got["score"], got["rating"], got["comment"], got["extra"]) == (0.0, "dislike", "wrong", {"ui": "thumbs"})
    assert [r["rating"] for r in store.rows()] == ["dislike"]


def test_prune_deletes_old_decisions_and_their_feedback(store):
    store.record(row("old", at=time.time() - 10 * 86400))
    store.record(row("new"))
    store.rate("old", 1.0)
    assert store.prune(7) == 1
    assert store.decision("old") is None and store.feedback_for("old") is None and store.decision("new")
    with pytest.raises(ValueError, match="must be more than 0"):
        store.prune(0)


def test_a_bad_store_url_is_named(tmp_path):
    with pytest.raises(ValueError, match="store URL 'nosuchdb://x' cannot be used"):
        DecisionStore("nosuchdb://x")


@pytest.mark.parametrize("body,score", [({"score": 0.25}, 0.25), ({"rating": "like"}, 1.0),
                                        ({"rating": "dislike"}, 0.0), ({"rating": 5}, 1.0), ({"rating": 2}, 0.25)])
def test_ratings_become_scores(body, score):
    assert FeedbackRequest(request_id="r", **body).normalised_score() == score


@pytest.mark.parametrize("body,field", [({"request_id": "r", "score": 2}, "score"), ({"score": 1}, "request_id"),
                                        ({"request_id": "r", "score": 1, "extra": 1}, "extra"),
                                        ({"request_id": "r", "rating": 7}, "rating"),
                                        ({"request_id": "r", "rating": "meh"}, "rating"),
                                        ({"request_id": "r", "rating": True}, "rating"),
                                        ({"request_id": "r"}, "give a score")])
def test_bad_feedback_names_the_field(body, field):
    with pytest.raises(ValidationError, match=field):
        FeedbackRequest(**body)


def test_a_sessions_models_come_from_queued_and_written_rows(store):
    store.record(row("s1", session_id="conv", model="coder"))
    assert store.session_models("conv", since=0) == {"coder"}  # still queued on this replica
    store.flush()
    store.record(row("s2", session_id="conv", model="tiny"))
    store.record(row("s3", session_id="other", model="large"))
    store.record(row("s4", session_id="conv", model="large", at=time.time() - 7200))  # too old
    assert store.session_models("conv", since=time.time() - 3600) == {"coder", "tiny"}
