"""Batched decisions (route_many, what the ingress runs for concurrent requests) decide exactly as one request at
a time: same model, rule and task, and probabilities equal to 1e-4 although a batch pads its prompts to one length;
the shadow policy and a pinned model go through the batch too."""
import pytest

from router.policy import DEFAULT_POLICY_PATH, load_policy
from router.service import RouteRequest

SMOL, LARGE = "smollm2-135m", "qwen2.5-coder-1.5b"
PROMPTS = ["hi", "Write a Python function that merges two sorted lists and explain its complexity.",
           "If 3x + 5 = 20, what is x?", "Thanks, bye!", "Translate 'good morning' into French.",
           "Summarise the causes of the First World War in three paragraphs, with dates and the main actors."]


@pytest.fixture(scope="module")
def service():
    from router.service import RoutingService

    routing = RoutingService()
    routing.apply_policy({**load_policy(DEFAULT_POLICY_PATH).model_dump(mode="json"), "version": "live"})
    return routing


def test_a_batch_decides_as_one_request_at_a_time(service):
    requests = [RouteRequest(p, 4 + 3 * i) for i, p in enumerate(PROMPTS)] + [RouteRequest(PROMPTS[1], 20, SMOL)]
    batched = service.route_many(requests)
    assert len(batched) == len(requests)
    for request, (decision, row, shadow) in zip(requests, batched):
        alone, alone_row = service.route_with_features(request.text, request.input_tokens, request.model)
        assert (decision.model, decision.rule, decision.task) == (alone.model, alone.rule, alone.task), request
        assert decision.scores == pytest.approx(alone.scores, abs=1e-4)
        assert row == pytest.approx(alone_row, abs=1e-4)
        assert shadow is None
    assert batched[-1][0].model == SMOL  # the pinned request stays pinned inside a batch
    assert {d.model for d, _, _ in batched[:-1]} != {SMOL}, "the prompts should not all route alike"


def test_the_shadow_policy_decides_for_every_request_of_a_batch(service):
    large_only = {**load_policy(DEFAULT_POLICY_PATH).model_dump(mode="json"), "version": "large-only",
                  "models": {LARGE: {}}, "fallback": LARGE,
                  "profiles": {}}
    service.apply_shadow(large_only)
    try:
        batched = service.route_many([RouteRequest(p, 8) for p in PROMPTS] + [RouteRequest("hi", 2, SMOL)])
    finally:
        service.apply_shadow(None)
    assert all(shadow is not None and shadow.model == LARGE for _, _, shadow in batched)
    assert batched[-1][0].model == SMOL  # pinned to a model the shadow lacks: "auto" there, the live one unchanged


def test_an_empty_batch_decides_nothing(service):
    assert service.route_many([]) == []


def test_length_groups_keep_similar_lengths_together_and_cap_the_batch():
    from router.features import length_groups

    lengths = [30, 9, 10, 31, 9, 100, 11, 12]
    groups = length_groups(lengths, batch_size=3)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))  # every row, once
    assert all(len(g) <= 3 for g in groups)
    for g in groups:  # padding within a group stays small: the longest row is within 1.25x + 2 of the shortest
        assert max(lengths[i] for i in g) <= 1.25 * min(lengths[i] for i in g) + 2
    assert [sorted(lengths[i] for i in g) for g in groups] == [[9, 9, 10], [11, 12], [30, 31], [100]]
