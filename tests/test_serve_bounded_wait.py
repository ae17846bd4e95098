"""Waits with a bound on the real ensemble: a burst of more concurrent requests than the tiny model can answer
within the policy's max_queue_wait_s. Each request is answered, or refused with a fast 503 and Retry-After,
within the bound plus one answer's time; none hangs."""
import asyncio
import json
import time

import httpx
import pytest

from router.serving.local_ensemble import wait_for

pytestmark = pytest.mark.serve
SMOL, BOUND_S, BURST = "smollm2-135m", 2.0, 12


async def _burst(base: str) -> list[tuple[int, float, dict, dict]]:
    body = {"model": SMOL, "max_tokens": 48, "temperature": 0,
            "messages": [{"role": "user", "content": "Tell me a short story about a cat."}]}
    async with httpx.AsyncClient(timeout=300) as http:
        async def one():
            started = time.monotonic()
            reply = await http.post(f"{base}/v1/chat/completions", json=body)
            return reply.status_code, time.monotonic() - started, dict(reply.headers), reply.json()
        return await asyncio.gather(*(one() for _ in range(BURST)))


def test_a_burst_is_answered_or_refused_within_the_bound(ensemble):
    original = ensemble.policy()["policy"]
    bounded = json.loads(json.dumps(original))
    bounded["version"] = "bounded-wait"
    bounded["limits"] = {**bounded.get("limits", {}), "max_queue_wait_s": BOUND_S}
    ensemble.deploy_policy(bounded)
    try:
        wait_for(lambda: ensemble.policy()["version"] == "bounded-wait", 60, "the edit to go live")
        replies = asyncio.run(_burst(ensemble.base))
    finally:
        ensemble.deploy_policy(original)
        wait_for(lambda: ensemble.policy()["version"] == original["version"], 60, "the original policy")
    statuses = sorted(status for status, *_ in replies)
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
    longest_answer = max(body["router"]["model_latency_s"] for status, _, _, body in replies if status == 200)
    for status, elapsed, headers, body in replies:
        assert elapsed <= BOUND_S + longest_answer + 5.0, (status, elapsed, longest_answer)
        if status == 503:
            assert body["error"]["code"] == "queue_wait_exceeded" and int(headers["retry-after"]) >= 1
            assert "max_queue_wait_s" in body["error"]["message"]


def test_a_request_ends_by_the_policys_max_request_s(ensemble):
    """limits.max_request_s bounds the whole request over every model it tries: the large model asked for a long
    answer under a 1 s bound gives a 503 no_model_answered with Retry-After that names the bound, in about 1 s."""
    original = ensemble.policy()["policy"]
    bounded = json.loads(json.dumps(original))
    bounded["version"] = "bounded-request"
    bounded["limits"] = {**bounded.get("limits", {}), "max_request_s": 1.0}
    ensemble.deploy_policy(bounded)
    body = {"model": "qwen2.5-coder-1.5b", "max_tokens": 400, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a long essay on the history of the printing press."}]}
    try:
        wait_for(lambda: ensemble.policy()["version"] == "bounded-request", 60, "the edit to go live")
        started = time.monotonic()
        reply = httpx.post(f"{ensemble.base}/v1/chat/completions", json=body, timeout=120)
        elapsed = time.monotonic() - started
    finally:
        ensemble.deploy_policy(original)
        wait_for(lambda: ensemble.policy()["version"] == original["version"], 60, "the original policy")
    assert reply.status_code == 503, reply.text
    error = reply.json()["error"]
    assert error["code"] == "no_model_answered" and int(reply.headers["retry-after"]) >= 1
    assert "max_request_s (1s)" in error["message"], error["message"]
    assert elapsed < 10, elapsed
