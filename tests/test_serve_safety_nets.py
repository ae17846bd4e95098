"""Safety nets under faults, end to end on the real ensemble: a refused policy edit survives a restart of the
ingress, streams time out, fall back and count in the metrics like plain answers, and a client that leaves
stops its generation in the model replica."""
import copy
import os
import signal

import httpx
import pytest

from hang_up import hang_up_and_wait_for_quiet, replica_pid
from router.serving.local_ensemble import metric_value, wait_for

pytestmark = pytest.mark.serve

SMOL, CODER, LARGE = "smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"
GREETING = "Hi! How are you today?"
CODE = "Write a Python function that reverses a string."


def _policy_if(ensemble, accept):
    try:
        body = ensemble.policy()
    except (httpx.HTTPError, ValueError):  # the ingress is down or restarting
        return None
    return body if "version" in body and accept(body) else None


def _metrics(ensemble) -> str:
    try:
        return httpx.get(ensemble.metrics, timeout=10).text
    except httpx.HTTPError:
        return ""


def _stream(client, text, model="auto", max_tokens=16):
    with client.chat.completions.with_streaming_response.create(
            model=model, messages=[{"role": "user", "content": text}], max_tokens=max_tokens, temperature=0,
            stream=True) as response:
        return response.headers, list(response.parse())


def test_a_refused_edit_then_a_killed_ingress_serves_the_last_good_policy(ensemble, client):
    import sqlite3

    from router.store import DecisionStore

    original = ensemble.policy()["policy"]
    database = os.environ["ROUTER_STORE_URL"].removeprefix("sqlite:///")
    before_kill = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": GREETING}], max_tokens=8).headers["x-request-id"]
    broken = {**copy.deepcopy(original), "version": "broken-fallback", "fallback": "gpt-9"}
    ensemble.deploy_policy(broken)
    try:
        before = wait_for(lambda: _policy_if(ensemble, lambda b: b["refused_edit"]), 60, "the bad edit to be refused")
        assert before["version"] == original["version"] and before["refused_edit"]["version"] == "broken-fallback"
        direct_before = ensemble.live_direct()
        os.kill(before["replica_pid"], signal.SIGKILL)  # as an out-of-memory kill or a node loss would
        # Serve restarts the replica with the config it holds, the refused one: the new replica must still serve
        after = wait_for(lambda: _policy_if(ensemble, lambda b: b["replica_pid"] != before["replica_pid"]), 180,
                         "a new ingress replica")
        assert after["version"] == original["version"]
        # the new replica serves on a port of its own, and Serve's REST API lists it in place of the dead one's
        assert ensemble.live_direct() != direct_before
        assert after["refused_edit"]["version"] == "broken-fallback"
        assert "fallback: 'gpt-9' must be one of the policy's models" in after["refused_edit"]["message"]
        health = httpx.get(f"{ensemble.base}/healthz", timeout=60)
        assert health.status_code == 200
        assert (health.json()["policy_version"], health.json()["refused_policy_version"]) == \
            (original["version"], "broken-fallback")
        answered = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": GREETING}],
                                                  max_tokens=8, temperature=0)
        assert answered.model == SMOL  # routed by the last good policy
        flagged = wait_for(lambda: metric_value(_metrics(ensemble), "ray_router_policy_refused",
                                                replica=after["replica"]) == 1, 120, "router_policy_refused = 1", 2)
        assert flagged
        from router.cli import main

        assert main(["policy", "status", "--url", ensemble.base]) == 1  # operators see the divergence
        # the kill left the decision store readable, with the answer given before it
        with sqlite3.connect(database) as raw:
            assert raw.execute("pragma integrity_check").fetchone()[0] == "ok"
        store = DecisionStore(os.environ["ROUTER_STORE_URL"])
        assert store.decision(before_kill)["model"] == SMOL
        store.close()
    finally:
        ensemble.deploy_policy(original)
        wait_for(lambda: _policy_if(ensemble, lambda b: b["refused_edit"] is None), 60, "a valid edit to clear it")
    assert wait_for(lambda: metric_value(_metrics(ensemble), "ray_router_policy_refused",
                                         replica=after["replica"]) == 0, 120, "router_policy_refused = 0", 2)
    assert main(["policy", "status", "--url", ensemble.base]) == 0


def test_a_stream_whose_model_times_out_is_answered_by_the_next_model(ensemble, client):
    original = ensemble.policy()["policy"]
    slow = copy.deepcopy(original)
    slow["version"] = "coder-times-out-streaming"
    slow["models"][CODER]["timeout_s"] = 0.001
    ensemble.deploy_policy(slow)
    try:
        wait_for(lambda: ensemble.policy()["version"] == slow["version"], 60, "the timeout policy")
        headers, chunks = _stream(client, CODE)
        assert headers["x-router-rule"] == "cheapest_confident"  # the router chose the code model...
        assert headers["x-router-model"] == LARGE  # ...and the next candidate streamed the answer
        assert "qwen2.5-coder-0.5b timed out after 0.001s" in headers["x-router-fallback"]
        assert {c.model for c in chunks} == {LARGE}
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    finally:
        ensemble.deploy_policy(original)
        wait_for(lambda: ensemble.policy()["version"] == original["version"], 60, "the original policy")


def test_streamed_answers_count_in_the_metrics(ensemble, client):
    def streamed_requests():
        return metric_value(_metrics(ensemble), "ray_router_requests", model=LARGE, rule="pinned", stream="true") or 0

    def large_tokens_out():
        return metric_value(_metrics(ensemble), "ray_router_tokens", model=LARGE, direction="out") or 0

    requests_before, tokens_before = streamed_requests(), large_tokens_out()
    headers, chunks = _stream(client, GREETING, model=LARGE, max_tokens=12)
    assert headers["x-router-model"] == LARGE and chunks[-1].choices[0].finish_reason in ("stop", "length")
    from router.store import DecisionStore

    store = DecisionStore(os.environ["ROUTER_STORE_URL"])  # the streamed answer is in the decision store too
    row = wait_for(lambda: store.decision(headers["x-request-id"]), 30, "the streamed answer in the store")
    store.close()
    assert row["model"] == LARGE and row["rule"] == "pinned" and row["output_tokens"] > 0
    wait_for(lambda: streamed_requests() >= requests_before + 1, 120, "the stream in router_requests", 2)
    wait_for(lambda: large_tokens_out() > tokens_before, 120, "the stream's tokens in router_tokens", 2)


def test_a_fresh_app_with_an_invalid_policy_refuses_to_start(ensemble):
    """With no last good policy (a new app name on this cluster), a bad first policy still stops the ingress from
    starting, and Serve reports the bad field."""
    from router.serving.live import deploy_config
    from router.serving.local_ensemble import serve_config

    config = serve_config(ensemble.port)
    fresh = copy.deepcopy(config["applications"][0])
    fresh.update(name="fresh", route_prefix="/fresh")
    fresh["args"]["models"] = [SMOL]
    fresh["deployments"] = [d for d in fresh["deployments"] if d["name"] not in (CODER, LARGE)]
    fresh["deployments"][0]["user_config"]["policy"]["fallback"] = "gpt-9"
    deploy_config({**config, "applications": [*config["applications"], fresh]}, ensemble.dashboard)

    def fresh_status():
        apps = httpx.get(f"{ensemble.dashboard}/api/serve/applications/", timeout=30).json()["applications"]
        status = apps.get("fresh", {})
        return status if status.get("status") in ("DEPLOY_FAILED", "UNHEALTHY") else None

    try:
        failed = wait_for(fresh_status, 300, "the fresh app to fail", interval=2)
        ingress = failed["deployments"]["RouterIngress"]
        assert ingress["status"] in ("DEPLOY_FAILED", "UNHEALTHY")
        assert "fallback: 'gpt-9' must be one of the policy's models" in ingress["message"]
    finally:
        deploy_config(config, ensemble.dashboard)  # the fresh app goes; the router app is untouched
    assert httpx.get(f"{ensemble.base}/healthz", timeout=60).status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_stops_its_models_generation(ensemble, stream):
    """Through the ingress and Serve's call to the model replica: a client that gives up on a long answer stops
    its generation in the model's replica, rather than leaving it to run to max_tokens on a core."""
    hang_up_and_wait_for_quiet(ensemble.base, SMOL, replica_pid(ensemble, SMOL), stream)
