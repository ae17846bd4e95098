"""The escalation budget on the real ensemble (policy `escalation`): once a client's recent requests went to the
large model at the policy's cap, its next large-bound request is answered by the cheapest eligible model, a request
that names the large model gets a 429 with Retry-After, another client is untouched, /v1/route counts nothing, and the refusal counts in router_refusals."""
import json
import uuid

import httpx
import openai
import pytest

from router.serving.local_ensemble import metric_value, wait_for

pytestmark = pytest.mark.serve

SMOL, LARGE = "smollm2-135m", "qwen2.5-coder-1.5b"
HARD = "Prove that there are infinitely many primes, step by step."  # the shipped router sends it to LARGE


def ask(client, user: str, model: str = "auto", text: str = HARD):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=1, temperature=0, user=user)
    return raw.parse().model, raw.headers["x-router-rule"]


def refusals(ensemble) -> float:
    try:
        text = httpx.get(ensemble.metrics, timeout=10).text
    except httpx.HTTPError:
        return 0
    return metric_value(text, "ray_router_refusals", code="escalation_budget") or 0


def test_a_client_at_its_cap_is_served_by_a_small_model_and_others_are_not(ensemble, client):
    alice, bob = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("alice", "bob"))  # fresh clients and sessions
    refusals_before = refusals(ensemble)
    original = ensemble.policy()["policy"]
    capped = json.loads(json.dumps(original))
    capped["version"] = "escalation-capped"
    capped["escalation"] = {"enabled": True, "max_fallback_share": 0.5, "min_requests": 2, "client": "user"}
    ensemble.deploy_policy(capped)
    try:
        wait_for(lambda: ensemble.policy()["version"] == "escalation-capped", 60, "the edit to go live")
        route = httpx.post(f"{ensemble.base}/v1/route", json={"model": "auto", "user": alice,
                                                               "messages": [{"role": "user", "content": HARD}]},
                           timeout=60)
        assert route.json()["model"] == LARGE  # asking is free: it counts in no budget
        assert ask(client, alice) == (LARGE, "fallback_no_confident_model")
        assert ask(client, alice, LARGE) == (LARGE, "pinned")
        # 2 of alice's 2 requests went to the large model (100% >= 50%): the next large-bound one does not
        model, rule = ask(client, alice)
        assert rule == "escalation_budget" and model != LARGE
        with pytest.raises(openai.RateLimitError) as refused:  # naming the large model: refused, not downgraded
            ask(client, alice, LARGE)
        assert refused.value.code == "escalation_budget" and int(refused.value.response.headers["retry-after"]) >= 1
        assert "2 of this client's 3 requests" in refused.value.message
        wait_for(lambda: refusals(ensemble) >= refusals_before + 1, 120, "the 429 in router_refusals", 2)
        assert ask(client, bob) == (LARGE, "fallback_no_confident_model")  # another client is not capped
        route = httpx.post(f"{ensemble.base}/v1/route", json={"model": "auto", "user": alice,
                                                               "messages": [{"role": "user", "content": HARD}]},
                           timeout=60)
        assert route.json()["rule"] == "escalation_budget"  # what an answer would get
    finally:
        ensemble.deploy_policy(original)
        wait_for(lambda: ensemble.policy()["version"] == original["version"], 60, "the original policy")
    assert ask(client, alice) == (LARGE, "fallback_no_confident_model")  # switched off: no cap
