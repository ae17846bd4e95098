"""The learning loop on the real ensemble: each answer's row gains the response's embedding and toxicity after
it is sent, and a shadow policy's decisions are stored beside the live ones and never served."""
import json
import os

import httpx
import numpy as np
import pytest

from router.serving.local_ensemble import wait_for
from router.store import DecisionStore

pytestmark = pytest.mark.serve

SMOL, LARGE = "smollm2-135m", "qwen2.5-coder-1.5b"
GREETING = "Hi! How are you today?"


def ask(client, text: str):
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": text}], max_tokens=16, temperature=0)
    return raw.parse(), raw.headers


def test_the_answer_gains_its_embedding_and_toxicity_after_it_is_sent(ensemble, client):
    completion, headers = ask(client, GREETING)
    store = DecisionStore(os.environ["ROUTER_STORE_URL"])
    try:
        row = wait_for(lambda: (r := store.decision(headers["x-request-id"])) and r["response_embedding"] and r,
                       60, "the response's embedding in the store")
    finally:
        store.close()
    vector = np.frombuffer(row["response_embedding"], "<f4")
    assert vector.shape == (384,) and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3  # MiniLM, normalised
    assert 0.0 <= row["response_toxicity"] <= 1.0
    assert row["model"] == completion.model and row["output_tokens"] == completion.usage.completion_tokens


def test_a_shadow_policy_is_stored_beside_the_live_one_and_never_served(ensemble, client):
    original = ensemble.policy()["policy"]
    large_only = {**json.loads(json.dumps(original)), "version": "shadow-large-only", "models": {LARGE: {}},
                  "fallback": LARGE, "profiles": {}}
    ensemble.deploy_policy(original, shadow=large_only)
    store = DecisionStore(os.environ["ROUTER_STORE_URL"])
    try:
        wait_for(lambda: ensemble.policy()["shadow_policy_version"] == "shadow-large-only", 60, "the shadow policy")
        assert ensemble.policy()["version"] == original["version"]
        completion, headers = ask(client, GREETING)
        assert completion.model == SMOL and headers["x-router-model"] == SMOL  # served by the live decision
        row = wait_for(lambda: store.decision(headers["x-request-id"]), 30, "the decision in the store")
        assert (row["model"], row["chosen"], row["policy_version"]) == (SMOL, SMOL, original["version"])
        assert (row["shadow_model"], row["shadow_policy_version"]) == (LARGE, "shadow-large-only")
        assert row["shadow_rule"] and set(row["shadow_scores"]) == set(row["scores"])
        # a broken shadow is refused; the earlier shadow and the live policy stay
        ensemble.deploy_policy(original, shadow={**large_only, "version": "bad-shadow", "fallback": "gpt-9"})
        wait_for(lambda: ensemble.policy()["refused_shadow"], 60, "the bad shadow to be refused")
        seen = ensemble.policy()
        assert "gpt-9" in seen["refused_shadow"]["message"] and seen["shadow_policy_version"] == "shadow-large-only"
        assert seen["version"] == original["version"] and seen["refused_edit"] is None
        assert httpx.get(f"{ensemble.base}/healthz", timeout=30).json()["policy_refused"] is False
    finally:
        store.close()
        ensemble.deploy_policy(original)
        wait_for(lambda: ensemble.policy()["shadow_policy_version"] is None, 60, "the shadow to be cleared")
