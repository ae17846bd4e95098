"""Direct ingress (issue 16): the ingress replica's own port serves the same API as the proxy, without its hop.
Everything a client relies on holds there too: the official client, streaming, request ids, the router's headers,
live policy edits, /healthz under 16 routing clients, and the metrics."""
import threading
import time

import httpx
import pytest
from openai import OpenAI

from router.policy import load_policy
from router.serving.local_ensemble import metric_value, wait_for

pytestmark = pytest.mark.serve
GREETING = "Hi! How are you today?"
CLIENTS = 16


@pytest.fixture(scope="module")
def direct(ensemble):
    assert ensemble.direct and ensemble.direct != ensemble.base  # found when the ensemble started
    url = ensemble.live_direct()  # an earlier test may have replaced the replica, and with it the port
    assert ensemble.direct_urls() == [url]
    return url


def test_the_direct_port_answers_the_official_client_and_streams(direct):
    client = OpenAI(base_url=f"{direct}/v1", api_key="not-needed-on-loopback", max_retries=0, timeout=300)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": GREETING}], max_tokens=8, temperature=0)
    answer = raw.parse()
    assert raw.headers["x-router-model"] == answer.model == "smollm2-135m"
    assert raw.headers["x-router-rule"] and raw.headers["x-request-id"]
    assert answer.choices[0].message.content
    stream = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": GREETING}],
                                            max_tokens=8, temperature=0, stream=True)
    chunks = [c for c in stream]
    assert chunks[0].model == "smollm2-135m" and "".join(c.choices[0].delta.content or "" for c in chunks)


def test_the_direct_port_decides_as_the_proxy_does_and_keeps_request_ids(ensemble, direct):
    body = {"model": "auto", "messages": [{"role": "user", "content": "Write a Python function that merges two sorted lists."}]}
    via_proxy = httpx.post(f"{ensemble.base}/v1/route", json=body, timeout=60).json()
    given = httpx.post(f"{direct}/v1/route", json=body, headers={"x-request-id": "direct-7"}, timeout=60)
    assert given.status_code == 200 and given.headers["x-request-id"] == "direct-7"
    assert given.json()["model"] == via_proxy["model"] and given.json()["rule"] == via_proxy["rule"]
    first, second = (httpx.post(f"{direct}/v1/chat/completions", content=b"{broken", timeout=60) for _ in range(2))
    assert first.status_code == 400 and "JSON" in first.text
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


def test_a_policy_edit_goes_live_on_the_direct_port_while_16_clients_route_there(ensemble, direct):
    statuses: list[int] = []
    stop = threading.Event()

    def client(k: int) -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                statuses.append(http.post(f"{direct}/v1/route", json={
                    "model": "auto", "messages": [{"role": "user", "content": f"Client {k}: a haiku, please."}]}
                ).status_code)

    def live_version() -> str:
        return httpx.get(f"{direct}/v1/policy", timeout=30).json()["version"]

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    policy = load_policy().model_dump(mode="json")
    edited = {**policy, "version": f"{policy['version']}-direct"}
    try:
        wait_for(lambda: len(statuses) >= 50, 120, "routing traffic from 16 clients on the direct port")
        with httpx.Client(timeout=10) as http:
            for _ in range(5):
                assert http.get(f"{direct}/healthz").status_code == 200
        ensemble.deploy_policy(edited)
        wait_for(lambda: live_version() == edited["version"], 120, "the edit on the direct port")
        served = len(statuses)
        wait_for(lambda: len(statuses) >= served + 50, 120, "routing after the edit")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        ensemble.deploy_policy(policy)
        wait_for(lambda: live_version() == policy["version"], 120, "the original policy back")
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    # a user_config edit reconfigures the replica in place: its direct port does not move (while Serve applies the
    # edit its target groups list the proxy instead, so this waits for the listing to settle)
    wait_for(lambda: ensemble.direct_urls() == [direct], 120, "the same direct port listed after the edits")


def test_answers_on_the_direct_port_reach_the_metrics(ensemble, direct):
    def routed() -> float:
        try:
            return metric_value(httpx.get(ensemble.metrics, timeout=10).text, "ray_router_requests") or 0.0
        except httpx.HTTPError:
            return 0.0

    def settled() -> list[float] | None:  # Ray exports metrics every 10 s: earlier traffic must not count as ours
        first = routed()
        time.sleep(11)
        return [first] if routed() == first else None

    before = wait_for(settled, 120, "the request counter to settle", interval=0)[0]
    for _ in range(3):
        httpx.post(f"{direct}/v1/chat/completions", json={
            "model": "smollm2-135m", "messages": [{"role": "user", "content": GREETING}], "max_tokens": 4},
            timeout=120).raise_for_status()
    wait_for(lambda: routed() >= before + 3, 120, "three direct answers counted", interval=2)
