"""Two ingress replicas share one decision store: feedback on an answer is accepted by the replica that did not
give it, a session's floor holds when its follow-up lands on the other replica, and with the policy's
`cache.shared` one replica's answer is the other's cache hit."""
import httpx
import pytest

from router.serving.live import config_with_policy, deploy_config
from router.serving.local_ensemble import serve_config, wait_for

pytestmark = pytest.mark.serve
CODER, CODE = "qwen2.5-coder-0.5b", "Write a Python function that reverses a string."
INGRESS = "RouterIngress"


def _ingress_replicas(ensemble, count: int, policy: dict | None = None) -> None:
    config = serve_config(ensemble.port)
    for deployment in config["applications"][0]["deployments"]:
        if deployment["name"] == INGRESS:
            deployment["num_replicas"] = count
    deploy_config(config_with_policy(config, policy) if policy else config, ensemble.dashboard)


def _answer(http, base: str, text: str, session: str) -> httpx.Response:
    return http.post(f"{base}/v1/chat/completions", headers={"x-session-id": session},
                     json={"model": "auto", "max_tokens": 8, "temperature": 0,
                           "messages": [{"role": "user", "content": text}]})


def test_feedback_and_sessions_join_across_two_ingress_replicas(ensemble):
    _ingress_replicas(ensemble, 2)
    try:
        with httpx.Client(timeout=300) as http:
            replicas: set[str] = set()

            def both_answer() -> bool:
                replicas.add(_answer(http, ensemble.base, "Hi!", "warmup").headers["x-router-replica"])
                return len(replicas) >= 2

            wait_for(both_answer, 300, "answers from both ingress replicas", interval=0.5)
            code = _answer(http, ensemble.base, CODE, "two-replica-session")
            assert code.status_code == 200 and code.headers["x-router-model"] == CODER
            answered_by = code.headers["x-router-replica"]

            def other(request):  # send until the other replica takes it (requests spread over replicas)
                for _ in range(20):
                    reply = request()
                    if reply.headers.get("x-router-replica") not in (None, answered_by):
                        return reply
                return None

            rated = other(lambda: http.post(f"{ensemble.base}/v1/feedback",
                                            json={"request_id": code.headers["x-request-id"], "rating": "like"}))
            assert rated is not None and rated.status_code == 200 and rated.json()["model"] == CODER
            follow_up = other(lambda: _answer(http, ensemble.base, "Thank you, that's great!", "two-replica-session"))
            assert follow_up is not None and follow_up.status_code == 200
            assert follow_up.headers["x-router-rule"] == "session_floor"
            assert follow_up.headers["x-router-model"] == CODER
    finally:
        _ingress_replicas(ensemble, 1)
        wait_for(lambda: httpx.get(f"{ensemble.base}/healthz", timeout=30).status_code == 200, 120, "one ingress")


def test_a_shared_answer_cache_gives_one_replicas_answer_again_on_the_other(ensemble):
    policy = httpx.get(f"{ensemble.base}/v1/policy", timeout=30).json()["policy"]
    shared = {**policy, "version": "shared-cache",
              "cache": {"enabled": True, "ttl_s": 600, "max_entries": 64, "shared": True}}
    _ingress_replicas(ensemble, 2, shared)
    try:
        with httpx.Client(timeout=300) as http:
            replicas: set[str] = set()

            def both_answer() -> bool:  # both replicas up, each under the shared-cache policy
                reply = _answer(http, ensemble.base, "Hi!", "warmup")
                if reply.headers.get("x-router-policy-version") == "shared-cache":
                    replicas.add(reply.headers["x-router-replica"])
                return len(replicas) >= 2

            wait_for(both_answer, 300, "answers from both ingress replicas", interval=0.5)
            first = _answer(http, ensemble.base, CODE, "shared-cache-1")
            assert first.status_code == 200 and first.headers["x-router-cache"] == "miss"
            for attempt in range(20):  # requests spread over the replicas: send until the other one takes it
                again = _answer(http, ensemble.base, CODE, f"shared-cache-{attempt + 2}")
                if again.headers["x-router-replica"] != first.headers["x-router-replica"]:
                    break
            assert again.headers["x-router-replica"] != first.headers["x-router-replica"]
            assert again.headers["x-router-cache"] == "hit" and again.headers["x-router-model"] == CODER
            assert again.json()["choices"][0]["message"] == first.json()["choices"][0]["message"]
    finally:
        _ingress_replicas(ensemble, 1, policy)
        wait_for(lambda: httpx.get(f"{ensemble.base}/v1/policy", timeout=30).json().get("version") == policy["version"],
                 120, "one ingress under the policy the test found")
