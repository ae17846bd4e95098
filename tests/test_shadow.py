"""The shadow policy: a candidate that decides beside the live one and is never served (the pure part, on the
real router), and `router report --shadow`'s comparison over a real SQLite store."""
import time

import pytest

from models.yaml_source import ConfigError
from router.offline.shadow import compare, summary_lines
from router.policy import DEFAULT_POLICY_PATH, load_policy
from router.service import RouteRequest
from router.store import DecisionStore

SMOL, CODER, LARGE = "smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"


def _policy_data(version: str, **changes) -> dict:
    return {**load_policy(DEFAULT_POLICY_PATH).model_dump(mode="json"), "version": version, **changes}


@pytest.fixture(scope="module")
def service():
    from router.service import RoutingService

    routing = RoutingService()
    routing.apply_policy(_policy_data("live"))
    return routing


def test_the_shadow_decides_beside_the_live_policy_without_changing_it(service):
    large_only = _policy_data("large-only", models={LARGE: {}}, fallback=LARGE, profiles={})
    assert service.apply_shadow(large_only).version == "large-only"
    (decision, _, shadow), (pinned, _, pinned_shadow) = service.route_many(
        [RouteRequest("hi there, how are you?", 8), RouteRequest("hi there", 8, SMOL)])
    assert decision.model == SMOL and service.live.policy.version == "live"
    assert shadow.model == LARGE and shadow.scores.keys() == decision.scores.keys()
    # a model the client named that the shadow does not serve is routed as auto there
    assert pinned.model == SMOL and pinned_shadow.model == LARGE


def test_a_refused_shadow_keeps_the_earlier_one_and_none_clears_it(service):
    service.apply_shadow(_policy_data("candidate"))
    with pytest.raises(ConfigError, match="gpt-9"):
        service.apply_shadow(_policy_data("broken", fallback="gpt-9"))
    assert service.shadow.policy.version == "candidate" and service.shadow_refused.version == "broken"
    assert service.live.policy.version == "live" and service.refused is None
    assert service.apply_shadow(None) is None and service.shadow is None
    assert service.route_many([RouteRequest("hello", 2)])[0][2] is None


def _row(request_id: str, chosen: str, shadow: str | None, cost: float) -> dict:
    return {"request_id": request_id, "at": time.time(), "endpoint": "chat.completions", "rule": "cheapest_adequate",
            "model": chosen, "chosen": chosen, "policy_version": "live", "cost": cost, "input_tokens": 1000,
            "output_tokens": 1000, "shadow_policy_version": "cand" if shadow else None, "shadow_model": shadow,
            "shadow_rule": "cheapest_adequate" if shadow else None, "shadow_scores": {shadow: 0.9} if shadow else None}


def test_report_shadow_compares_agreement_cost_and_feedback_where_they_differ(tmp_path):
    from models.catalogue import load_catalogue

    catalogue = load_catalogue()
    store = DecisionStore(f"sqlite:///{tmp_path / 's.db'}", batch_interval_s=0.05)
    try:
        smol_cost = catalogue.model(SMOL).cost(1000, 1000)
        for i in range(6):  # 6 agree on the tiny model, 4 differ (shadow wants the large one), 1 had no shadow
            store.record(_row(f"a{i}", SMOL, SMOL, smol_cost))
        for i in range(4):
            store.record(_row(f"d{i}", SMOL, LARGE, smol_cost))
        store.record(_row("n0", SMOL, None, smol_cost))
        store.flush()
        store.rate("d0", 0.0, "dislike")
        store.rate("d1", 0.0, "dislike")
        store.rate("a0", 1.0, "like")
        result = compare(store.rows(), catalogue)
    finally:
        store.close()
    assert result["requests"] == 10 and result["agreement"] == pytest.approx(0.6)
    assert result["live_cost"] == pytest.approx(10 * smol_cost)
    expected_shadow = 6 * smol_cost + 4 * catalogue.model(LARGE).cost(1000, 1000)
    assert result["shadow_cost_estimate"] == pytest.approx(expected_shadow)
    assert result["differences"] == [{"live": SMOL, "shadow": LARGE, "requests": 4}]
    assert result["feedback_where_they_differ"] == {"requests": 4, "rated": 2, "mean_score": 0.0, "disliked": 2}
    assert result["feedback_where_they_agree"]["mean_score"] == 1.0
    assert any("agreement 60.0%" in line for line in summary_lines(result))


def test_report_shadow_without_shadow_decisions_says_how_to_get_them():
    with pytest.raises(ValueError, match="user_config.shadow_policy"):
        compare([_row("x", SMOL, None, 0.0)])


def test_router_report_shadow_writes_json_and_html_and_names_an_empty_store(tmp_path, capsys):
    import json

    from router.cli import main

    url = f"sqlite:///{tmp_path / 's.db'}"
    store = DecisionStore(url, batch_interval_s=0.05)
    store.record(_row("d0", SMOL, LARGE, 0.001))
    store.flush()
    store.close()
    assert main(["report", "--shadow", "--store", url, "--out", str(tmp_path / "out")]) == 0
    assert "agreement 0.0%" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "shadow.json").read_text())["requests"] == 1
    assert "Shadow policy against live" in (tmp_path / "out" / "shadow.html").read_text()
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    assert main(["report", "--shadow", "--store", empty, "--out", str(tmp_path / "out")]) == 2
    assert "none of the 0 stored requests has a shadow decision" in capsys.readouterr().err
