from router.serving.sessions import SessionTiers

COST = {"tiny": 1.0, "coder": 5.0, "large": 20.0}.__getitem__


def test_the_costliest_model_of_a_conversation_is_kept():
    tiers = SessionTiers()
    assert tiers.floor("a") is None
    tiers.record("a", "coder", COST)
    tiers.record("a", "tiny", COST)
    assert tiers.floor("a") == "coder"
    tiers.record("a", "large", COST)
    assert tiers.floor("a") == "large"


def test_sessions_are_bounded_and_expire():
    tiers = SessionTiers(max_sessions=2, ttl_s=3600)
    for name in ("a", "b", "c"):
        tiers.record(name, "coder", COST)
    assert tiers.floor("a") is None and tiers.floor("c") == "coder"
    expired = SessionTiers(ttl_s=0.0)
    expired.record("a", "coder", COST)
    assert expired.floor("a") is None
