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
