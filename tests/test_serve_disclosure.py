"""Withheld routing details on the real ensemble: with access.disclose_routing false, a client without the
operator key sees which model answered and nothing of the scores, thresholds or reasons; the operator sees all."""
import json

import httpx
import pytest

from router.serving.disclosure import OPERATOR_HEADER, WITHHELD_FIELDS, WITHHELD_HEADERS
from router.serving.local_ensemble import wait_for

pytestmark = pytest.mark.serve

SMOL = "smollm2-135m"
BODY = {"model": "auto", "messages": [{"role": "user", "content": "Hi! How are you today?"}], "max_tokens": 8,
        "temperature": 0}


def _leaks(headers, body: dict) -> list[str]:
    return [h for h in WITHHELD_HEADERS if h in headers] + [f for f in WITHHELD_FIELDS if f in body]


def test_scores_and_reasons_reach_only_the_operator_when_the_switch_is_on(ensemble, client, tmp_path):
    key_file = tmp_path / "operator.key"
    key_file.write_text("s3cret-operator\n")
    original = ensemble.policy()["policy"]
    closed = json.loads(json.dumps(original))
    closed["version"] = "routing-withheld"
    closed["access"] = {**closed.get("access", {}), "disclose_routing": False, "operator_key_file": str(key_file)}
    ensemble.deploy_policy(closed)
    try:
        wait_for(lambda: ensemble.policy()["version"] == "routing-withheld", 60, "the edit to go live")
        route = httpx.post(f"{ensemble.base}/v1/route", json=BODY, timeout=60)
        assert route.status_code == 200 and route.json()["model"] == SMOL
        assert _leaks(route.headers, route.json()) == [] and route.headers["x-router-model"] == SMOL
        wrong = httpx.post(f"{ensemble.base}/v1/route", json=BODY, headers={OPERATOR_HEADER: "guess"}, timeout=60)
        assert _leaks(wrong.headers, wrong.json()) == []
        operator = httpx.post(f"{ensemble.base}/v1/route", json=BODY, headers={OPERATOR_HEADER: "s3cret-operator"},
                              timeout=60)
        assert {"scores", "reason", "rule"} <= set(operator.json()) and "x-router-scores" in operator.headers
        assert "policy" not in httpx.get(f"{ensemble.base}/v1/policy", timeout=30).json()  # its thresholds too
        assert "policy" in httpx.get(f"{ensemble.base}/v1/policy", headers={OPERATOR_HEADER: "s3cret-operator"},
                                     timeout=30).json()

        raw = client.chat.completions.with_raw_response.create(**BODY)  # the official client, no key
        completion = raw.parse()
        assert completion.model == SMOL and _leaks(raw.headers, completion.model_extra["router"]) == []
        assert completion.model_extra["router"]["answered_by"] == SMOL
        with httpx.stream("POST", f"{ensemble.base}/v1/chat/completions", json={**BODY, "stream": True},
                          timeout=120) as streamed:
            assert streamed.status_code == 200 and _leaks(streamed.headers, {}) == []
            assert any(line.startswith("data:") for line in streamed.iter_lines())
    finally:
        ensemble.deploy_policy(original)
        wait_for(lambda: ensemble.policy()["version"] == original["version"], 60, "the original policy")
    assert "scores" in httpx.post(f"{ensemble.base}/v1/route", json=BODY, timeout=60).json()
