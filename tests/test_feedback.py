"""The decision log behind /v1/feedback: bounded, keyed by request id, and the JSONL line it writes."""
import json

import pytest
from pydantic import ValidationError

from router.serving.feedback import DecisionLog, FeedbackRequest, append_feedback


def test_the_log_keeps_the_newest_decisions_only():
    log = DecisionLog(capacity=2)
    for i in range(3):
        log.remember(f"req-{i}", f"prompt {i}", {"model": f"m{i}"})
    assert log.get("req-0") is None  # the oldest was forgotten
    assert log.get("req-2")["model"] == "m2" and len(log.get("req-2")["prompt_sha256"]) == 64
    log.remember("-", "outside a request", {"model": "m"})  # no request id: nothing to key it by
    assert log.get("-") is None


def test_feedback_is_appended_with_its_decision(tmp_path):
    path = tmp_path / "fb" / "feedback.jsonl"
    append_feedback(FeedbackRequest(request_id="r1", score=1), {"model": "a"}, path)
    append_feedback(FeedbackRequest(request_id="r2", score=0.25, comment="meh"), {"model": "b"}, path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["request_id"], x["score"], x["decision"]["model"]) for x in lines] == [("r1", 1.0, "a"), ("r2", 0.25, "b")]
    assert lines[1]["comment"] == "meh" and lines[0]["received_at"] > 0


@pytest.mark.parametrize("body,field", [({"request_id": "r", "score": 2}, "score"), ({"score": 1}, "request_id"),
                                        ({"request_id": "r", "score": 1, "extra": 1}, "extra")])
def test_bad_feedback_names_the_field(body, field):
    with pytest.raises(ValidationError, match=field):
        FeedbackRequest(**body)
