"""Direct ingress (issue 16): the ingress replica's own port serves the same API as the proxy, without its hop.
Everything a client relies on holds there too: the official client, streaming, request ids, the router's headers
and the metrics; live policy edits and /healthz under 16 routing clients are in test_serve_concurrency.py."""
import httpx
import pytest
from openai import OpenAI

from router.serving.local_ensemble import metric_value, wait_for

pytestmark = pytest.mark.serve
GREETING = "Hi! How are you today?"


@pytest.fixture(scope="module")
def direct(ensemble):
    assert ensemble.direct and ensemble.direct != ensemble.base  # found when the ensemble started
    url = ensemble.live_direct()  # an earlier test may have replaced the replica, and with it the port
    # one replica, one port: the listing settles once Serve has applied an earlier test's policy edit
    wait_for(lambda: ensemble.direct_urls() == [url], 120, "the one ingress replica's port listed")
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


def test_answers_on_the_direct_port_reach_the_metrics(ensemble, direct):
    # streamed answers pinned to the tiny model: a label set the tests before this one in the module do not use,
    # so traffic of theirs that Ray has not exported yet cannot pass for ours
    labels = {"model": "smollm2-135m", "rule": "pinned", "stream": "true"}

    def answered() -> float:
        try:
            return metric_value(httpx.get(ensemble.metrics, timeout=10).text, "ray_router_requests", **labels) or 0.0
        except httpx.HTTPError:
            return 0.0

    client = OpenAI(base_url=f"{direct}/v1", api_key="not-needed-on-loopback", max_retries=0, timeout=300)
    before = answered()
    for _ in range(3):
        assert list(client.chat.completions.create(model="smollm2-135m", max_tokens=4, stream=True,
                                                   messages=[{"role": "user", "content": GREETING}]))
    wait_for(lambda: answered() >= before + 3, 120, "three direct answers counted", interval=2)
