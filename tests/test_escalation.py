"""The escalation budget (policy `escalation`): a pure cap on each client's share of requests that go to the
fallback, and the bounded per-client window it reads."""
import pytest

from models.catalogue import load_catalogue
from models.yaml_source import ConfigError
from router.decision import FALLBACK_NOT_CONFIDENT, PINNED, decide, pin
from router.escalation import ESCALATION_BUDGET, ClientWindows, RecentRequests, within_budget
from router.policy import parse_policy

CATALOGUE = load_catalogue()
SMOL, CODER, LARGE = "smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"


def policy(**escalation):
    return parse_policy({"version": "t", "fallback": LARGE, "models": {
        SMOL: {"threshold": 0.6, "tasks": ["chat"]}, CODER: {"threshold": 0.5, "tasks": ["code", "chat"]}, LARGE: {}},
        "escalation": {"enabled": True, "max_fallback_share": 0.5, "min_requests": 4, **escalation}},
        "test", CATALOGUE)


def to_large(p, task="chat"):
    d = decide({SMOL: 0.1, CODER: 0.1}, task, 10, p, CATALOGUE)
    assert (d.model, d.rule) == (LARGE, FALLBACK_NOT_CONFIDENT)
    return d


def test_a_client_over_the_cap_gets_the_cheapest_eligible_model_and_the_reason():
    p = policy()
    d = within_budget(to_large(p), RecentRequests(total=6, to_fallback=3), p)
    assert (d.model, d.rule) == (SMOL, ESCALATION_BUDGET)
    assert "3 of this client's 6 requests" in d.reason and "50%" in d.reason and "no eligible small" in d.reason
    assert within_budget(to_large(p, "code"), RecentRequests(6, 3), p).model == CODER  # smol does not serve code


def test_under_the_cap_too_few_requests_or_switched_off_nothing_changes():
    p = policy()
    d = to_large(p)
    assert within_budget(d, RecentRequests(6, 2), p) is d  # 33% < 50%
    assert within_budget(d, RecentRequests(3, 3), p) is d  # fewer than min_requests
    off = policy(enabled=False)
    assert within_budget(to_large(off), RecentRequests(10, 10), off).model == LARGE
    small = decide({SMOL: 0.9}, "chat", 10, p, CATALOGUE)
    assert within_budget(small, RecentRequests(10, 10), p) is small  # only requests bound for the fallback


def test_reject_a_named_fallback_or_no_eligible_small_model_refuses():
    p = policy(action="reject")
    assert (within_budget(to_large(p), RecentRequests(4, 4), p).model is None)
    p = policy()
    pinned = pin(LARGE, "chat", 10, p, CATALOGUE)
    assert pinned.rule == PINNED
    refused = within_budget(pinned, RecentRequests(4, 4), p)  # never answered by a model it did not name
    assert (refused.model, refused.rule) == (None, ESCALATION_BUDGET) and "named it" in refused.reason
    no_small = decide({SMOL: 0.9, CODER: 0.9}, "math", 10, p, CATALOGUE)  # no small model serves math here
    assert (no_small.model, no_small.eligible) == (LARGE, ())
    refused = within_budget(no_small, RecentRequests(4, 4), p)
    assert refused.model is None and "no small model is eligible" in refused.reason


def test_the_window_counts_recent_requests_and_forgets_old_clients():
    windows = ClientWindows(max_clients=2, max_per_client=3)
    for t, to_fallback in [(0, True), (1, True), (2, False), (3, True)]:
        windows.record("a", t, to_fallback)
    assert windows.recent("a", 3, window_s=100) == RecentRequests(3, 2)  # keeps the last 3
    assert windows.recent("a", 102.5, window_s=100) == RecentRequests(1, 1)  # t=1 and 2 left the window
    assert windows.retry_after("a", 102.5, window_s=100) == 1
    windows.record("b", 5, True)
    windows.record("c", 6, True)  # a third client: the least recently seen one ("a") is forgotten
    assert windows.recent("a", 6, 100) == RecentRequests(0, 0) and windows.recent("b", 6, 100).total == 1


@pytest.mark.parametrize("bad, field", [({"max_fallback_share": 1.5}, "max_fallback_share"),
                                        ({"max_fallback_share": 0}, "max_fallback_share"),
                                        ({"action": "downgrade"}, "action"), ({"window_s": -1}, "window_s"),
                                        ({"client": "cookie"}, "client"), ({"min_requests": 0}, "min_requests")])
def test_a_bad_escalation_setting_is_refused_naming_it(bad, field):
    with pytest.raises(ConfigError) as err:
        policy(**bad)
    assert f"escalation.{field}" in str(err.value)
