"""The answer cache's rules (router/serving/answer_cache.py): what is cacheable, what makes two requests alike,
expiry and eviction. Its clock is a stand-in, so expiry is tested without waiting."""
import pytest

import asyncio

from router.serving.answer_cache import AnswerCache, RecordedDeltas, ReplayedDeltas, cache_directives, cache_key

GREEDY = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.0, "max_tokens": 16, "tools": None}


def test_only_greedy_requests_are_cacheable_and_every_setting_counts():
    key = cache_key("smollm2-135m", GREEDY, "v1")
    assert key is not None and key == cache_key("smollm2-135m", dict(reversed(list(GREEDY.items()))), "v1")
    assert cache_key("smollm2-135m", {**GREEDY, "temperature": 0.7}, "v1") is None
    assert cache_key("smollm2-135m", {**GREEDY, "temperature": 0.7}, "v1", streamed=True) is None
    others = [cache_key("smollm2-135m", GREEDY, "v1", streamed=True),  # kept as deltas, not as a whole answer
              cache_key("qwen2.5-coder-0.5b", GREEDY, "v1"), cache_key("smollm2-135m", GREEDY, "v2"),
              cache_key("smollm2-135m", {**GREEDY, "max_tokens": 17}, "v1"),
              cache_key("smollm2-135m", {**GREEDY, "messages": [{"role": "user", "content": "hi!"}]}, "v1"),
              cache_key("smollm2-135m", {**GREEDY, "response_format": {"type": "json_object"}}, "v1")]
    assert key not in others and len(set(others)) == len(others)


def test_answers_expire_and_the_least_recently_used_go_first():
    now = [0.0]
    cache = AnswerCache(clock=lambda: now[0])
    cache.put("a", "answer a", max_entries=2)
    cache.put("b", "answer b", max_entries=2)
    assert cache.get("a", ttl_s=10) == "answer a"  # a is now the most recently used
    cache.put("c", "answer c", max_entries=2)
    assert (cache.get("b", 10), cache.get("a", 10), cache.get("c", 10)) == (None, "answer a", "answer c")
    now[0] = 10.5
    assert cache.get("a", ttl_s=10) is None and cache.get("c", ttl_s=60) == "answer c" and len(cache) == 1
    cache.put(None, "not cacheable", max_entries=2)
    assert cache.get(None, 10) is None and len(cache) == 1


def test_a_stream_is_recorded_as_it_passes_and_replayed_in_the_same_shape():
    class ModelStream:  # stands in for Serve's streaming response: async deltas, cancellable
        def __init__(self, deltas):
            self.deltas, self.cancelled = iter(deltas), False

        async def __anext__(self):
            try:
                return next(self.deltas)
            except StopIteration:
                raise StopAsyncIteration from None

        def cancel(self):
            self.cancelled = True

    first, rest = {"text": "Hel", "finish_reason": None}, [{"text": "lo", "finish_reason": "stop"}]

    async def read(deltas):
        return [delta async for delta in deltas]

    model = ModelStream(rest)
    recorded = RecordedDeltas(first, model)
    assert asyncio.run(read(recorded)) == rest and recorded.kept == [first, *rest]
    recorded.cancel()
    assert model.cancelled
    replayed = ReplayedDeltas(recorded.kept)
    replayed.cancel()  # nothing to stop, and the replay still runs whole
    assert asyncio.run(read(replayed)) == [first, *rest] and asyncio.run(read(replayed)) == []


@pytest.mark.parametrize("header,read,write", [
    (None, True, True), ("", True, True), ("max-age=0", True, True), ("no-cache", False, True),
    ("No-Cache", False, True), ("no-store", False, False), ("max-age=60, no-store", False, False),
    ('no-cache="set-cookie"', False, True)])
def test_a_requests_cache_control_says_whether_the_cache_is_read_and_written(header, read, write):
    assert cache_directives(header) == (read, write)


@pytest.mark.parametrize("section,message", [
    ({"ttl_s": 0}, "cache.ttl_s"), ({"max_entries": 0}, "cache.max_entries"), ({"ttl_s": "long"}, "cache.ttl_s"),
    ({"size": 3}, "cache.size")])
def test_a_bad_cache_section_is_refused_naming_the_field(section, message):
    from models.yaml_source import ConfigError
    from router.policy import parse_policy

    data = {"fallback": "qwen2.5-coder-1.5b", "models": {"qwen2.5-coder-1.5b": {"threshold": 0.0}}, "cache": section}
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_policy(data)


def _cache_policy(**cache):
    from router.policy import parse_policy

    return parse_policy({"version": "v1", "fallback": "qwen2.5-coder-1.5b",
                         "models": {"qwen2.5-coder-1.5b": {"threshold": 0.0}}, "cache": cache})


def test_the_policys_cache_keeps_in_memory_or_shared_and_a_failed_database_is_only_a_miss(tmp_path):
    """PolicyAnswerCache over a real SQLite decision store: off, no-store and no-cache as the policy and the
    client say; a kept answer found again in this replica's memory or, shared, in the database; and a database
    that fails (its table dropped) turns a lookup into a miss that says `unavailable`, never an error."""
    from router.serving.answer_cache import PolicyAnswerCache
    from router.store import DecisionStore
    from router.store.answers import SharedAnswers
    from router.store.schema import answer_cache

    store = DecisionStore(f"sqlite:///{tmp_path / 'decisions.db'}")
    cache, answer = PolicyAnswerCache(SharedAnswers(store.engine)), ("smollm2-135m", {"text": "hi"})
    local, shared = _cache_policy(enabled=True), _cache_policy(enabled=True, shared=True)

    async def keep_and_find(policy, key):
        kept = cache.keep(key, answer, policy)
        if kept is not None:
            await kept  # a shared write runs off the event loop
        return await cache.lookup(key, policy, None)

    try:
        assert cache.key("smollm2-135m", GREEDY, _cache_policy(enabled=False), None, streamed=False) is None
        assert cache.key("smollm2-135m", GREEDY, local, "no-store", streamed=False) is None
        key = cache.key("smollm2-135m", GREEDY, local, None, streamed=False)
        assert key == cache_key("smollm2-135m", GREEDY, "v1")
        assert asyncio.run(cache.lookup(key, local, None)) == (None, "miss")
        assert asyncio.run(keep_and_find(local, key)) == (answer, "hit")
        assert asyncio.run(cache.lookup(key, local, "no-cache")) == (None, "bypass")
        assert asyncio.run(cache.lookup(key, shared, None)) == (None, "miss")  # memory is not the database
        found, lookup = asyncio.run(keep_and_find(shared, key))
        assert (tuple(found), lookup) == (answer, "hit") and len(cache.shared) == 1
        answer_cache.drop(store.engine)
        assert asyncio.run(cache.lookup(key, shared, None)) == (None, "unavailable")
        assert asyncio.run(keep_and_find(shared, "another")) == (None, "unavailable")  # the failed keep is logged
    finally:
        store.close()
