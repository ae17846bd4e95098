"""Under concurrency: while 16 clients route without pause, /healthz still answers (the decision runs off the
ingress's event loop) and a policy edit goes live, with every routing request answered; concurrent decisions
share encoder calls (the batch-size histogram sees batches of more than one). Through Serve's proxy, and on the
ingress replica's own port (direct ingress), whose port a policy edit does not move."""
import threading

import httpx
import pytest

from router.policy import load_policy
from router.serving.local_ensemble import metric_value, wait_for

pytestmark = pytest.mark.serve
CLIENTS = 16


@pytest.fixture(params=["proxy", "direct ingress"])
def base(request, ensemble) -> str:
    return ensemble.base if request.param == "proxy" else ensemble.live_direct()


def test_healthz_answers_and_a_policy_edit_goes_live_while_16_clients_route(ensemble, base):
    statuses: list[int] = []
    stop = threading.Event()

    def live_version() -> str:
        return httpx.get(f"{base}/v1/policy", timeout=30).json()["version"]

    def client(k: int) -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                reply = http.post(f"{base}/v1/route", json={
                    "model": "auto", "messages": [{"role": "user", "content": f"Client {k}: write a haiku."}]})
                statuses.append(reply.status_code)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    policy = load_policy().model_dump(mode="json")
    edited = {**policy, "version": f"{policy['version']}-under-load"}
    try:
        wait_for(lambda: len(statuses) >= 50, 120, "routing traffic from 16 clients")
        with httpx.Client(timeout=10) as http:
            for _ in range(5):  # a 10 s timeout: a blocked event loop would not answer in time under this load
                assert http.get(f"{base}/healthz").status_code == 200
        served_before = len(statuses)
        ensemble.deploy_policy(edited)
        wait_for(lambda: live_version() == edited["version"], 120, "the edit to go live under load")
        wait_for(lambda: len(statuses) >= served_before + 50, 120, "routing after the edit")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        ensemble.deploy_policy(policy)
        wait_for(lambda: live_version() == policy["version"], 120, "the original policy back")
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    if base != ensemble.base:  # a user_config edit reconfigures the replica in place: its direct port stays (while
        # Serve applies an edit its target groups list the proxy instead, so this waits for the listing to settle)
        wait_for(lambda: ensemble.direct_urls() == [base], 120, "the same direct port listed after the edits")

    def batched_decisions() -> float | None:
        try:
            text = httpx.get(ensemble.metrics, timeout=10).text
        except httpx.HTTPError:
            return None
        total = metric_value(text, "ray_router_decision_batch_size_count")
        alone = metric_value(text, "ray_router_decision_batch_size_bucket", le="1.0")
        return None if total is None or alone is None or total <= alone else total - alone

    assert wait_for(batched_decisions, 120, "a batch of concurrent decisions on the metrics endpoint", interval=2)
