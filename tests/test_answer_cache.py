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
