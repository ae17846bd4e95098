"""Each metric against values computed by hand (worked out in the comments)."""
import math

import numpy as np
import pytest

from router.offline import metrics as M
from router.offline.report import sweep

WEAK = [1, 0, 1, 0]
STRONG = [1, 1, 1, 1]


def test_operating_points_follow_routellm_quantile_sweep():
    # cuts = quantiles 0, .5, 1 of s = [.1, .25, .4]; >= at the first two, > at the last
    points = M.routellm_operating_points([0.1, 0.2, 0.3, 0.4], WEAK, STRONG, num_results=2)
    assert [p.threshold for p in points] == pytest.approx([0.1, 0.25, 0.4])
    assert [(p.strong_pct, p.quality) for p in points] == [(100.0, 100.0), (50.0, 75.0), (0.0, 50.0)]


def test_apgr_and_cpt_for_an_uninformed_router():
    points = M.routellm_operating_points([0.1, 0.2, 0.3, 0.4], WEAK, STRONG, num_results=2)
    # AUC = .5*(50+75)/2 + .5*(75+100)/2 = 75; weak AUC 50, strong AUC 100
    assert M.routellm_auc(points) == pytest.approx(75.0)
    assert M.routellm_apgr(points, 50.0, 100.0) == pytest.approx(0.5)
    assert M.routellm_cpt(points, 0.5, 50.0, 100.0) == pytest.approx(50.0)  # quality 75 is reached at 50%
    assert M.routellm_cpt(points, 0.8, 50.0, 100.0) == pytest.approx(80.0)  # 90: 50 + 15/25 * 50


def test_apgr_cpt_and_paper_apgr_for_a_perfect_router():
    # the two prompts the weak model fails get the highest strong scores
    points = M.routellm_operating_points([0.1, 0.4, 0.2, 0.3], WEAK, STRONG, num_results=2)
    assert sorted((p.strong_pct, p.quality) for p in points) == [(0.0, 50.0), (50.0, 100.0), (100.0, 100.0)]
    # AUC = .5*(50+100)/2 + .5*100 = 87.5 -> APGR = (87.5-50)/50
    assert M.routellm_apgr(points, 50.0, 100.0) == pytest.approx(0.75)
    assert M.routellm_cpt(points, 0.5, 50.0, 100.0) == pytest.approx(25.0)
    # PGR rises linearly from 0 to 1 over budgets 0..50%, then stays 1: .25 + .5
    assert M.paper_apgr(points, 50.0, 100.0) == pytest.approx(0.75)


def test_ties_in_router_scores():
    # every score equal: all cuts are .5; the first two send everything to strong, the last nothing
    points = M.routellm_operating_points([0.5] * 4, WEAK, STRONG, num_results=2)
    assert [(p.strong_pct, p.quality) for p in points] == [(100.0, 100.0), (100.0, 100.0), (0.0, 50.0)]
    assert M.routellm_apgr(points, 50.0, 100.0) == pytest.approx(0.5)


def test_apgr_is_undefined_when_both_models_score_the_same():
    points = M.routellm_operating_points([0.1, 0.2], [1, 0], [1, 0], num_results=2)
    assert math.isnan(M.routellm_apgr(points, 50.0, 50.0))


def test_routellm_optimal_quality():
    # only prompts 2 and 4 gain from the strong model; one strong call (25%) buys one of them
    assert M.routellm_optimal_quality([1, 0, 1, 0], [1, 1, 0, 1], 0.25) == pytest.approx(75.0)
    assert M.routellm_optimal_quality([1, 0, 1, 0], [1, 1, 0, 1], 1.0) == pytest.approx(100.0)


SCORES = np.array([[1, 1], [0, 1], [0, 0], [1, 0]], dtype=float)
COSTS = np.array([[1, 10]] * 4, dtype=float)


def test_oracle_is_best_model_then_cheapest():
    assert M.oracle_index(SCORES, COSTS).tolist() == [0, 1, 0, 0]


def test_routing_accuracy_splits_over_and_under_routing():
    # row 0: large where small sufficed (over); row 1: small failed where large succeeded (under)
    acc = M.routing_accuracy(np.array([1, 0, 0, 0]), SCORES, COSTS)
    assert (acc.accuracy, acc.over_routing, acc.under_routing) == (0.5, 0.25, 0.25)
    # always large: over on rows 0 and 2 (2: both fail, large costs more), under on row 3
    acc = M.routing_accuracy(np.array([1, 1, 1, 1]), SCORES, COSTS)
    assert (acc.accuracy, acc.over_routing, acc.under_routing) == (0.25, 0.5, 0.25)


def test_confusion_matrix_rows_are_the_oracle_columns_the_router():
    # oracle picks [0, 1, 0, 0]; the router picks [1, 0, 0, 1]
    matrix = M.confusion_matrix(np.array([1, 0, 0, 1]), SCORES, COSTS)
    assert matrix.tolist() == [[1, 2], [1, 0]]
    assert matrix.sum() == 4 and np.trace(matrix) == 1
    assert M.confusion_matrix(np.zeros(3, dtype=int), np.ones((3, 1)), np.ones((3, 1))).tolist() == [[3]]


def test_routing_accuracy_with_a_single_model_is_perfect():
    acc = M.routing_accuracy(np.zeros(3, dtype=int), np.array([[1.0], [0.0], [1.0]]), np.ones((3, 1)))
    assert acc.accuracy == 1.0 and acc.over_routing == 0.0 and acc.under_routing == 0.0


def test_routing_accuracy_when_all_models_are_equal_prefers_the_cheapest():
    scores = np.ones((2, 3))
    costs = np.array([[1.0, 2.0, 3.0]] * 2)
    acc = M.routing_accuracy(np.array([0, 2]), scores, costs)
    assert (acc.accuracy, acc.over_routing, acc.under_routing) == (0.5, 0.5, 0.0)


def test_savings_against_always_large():
    s = M.savings(np.array([0, 1, 0, 0]), SCORES, COSTS, large=1)
    # cost 1+10+1+1 = 13 of 40; quality .75 against the large model's .5
    assert s["cost_saved"] == pytest.approx(1 - 13 / 40)
    assert s["quality_kept"] == pytest.approx(1.5)
    assert M.savings(np.array([0, 1, 0, 0]), SCORES, COSTS, large=1, router_cost=27)["cost_saved"] == pytest.approx(0.0)


def test_report_sweep_with_two_models_is_routellms_sweep():
    rng = np.random.default_rng(3)
    n = 200
    weak, strong = rng.integers(0, 2, n).astype(float), rng.integers(0, 2, n).astype(float)
    p_weak = rng.random(n)
    probs = np.column_stack([p_weak, rng.random(n)])
    ours = sweep(probs, np.column_stack([weak, strong]), np.ones((n, 2)), ["w", "s"])
    theirs = M.routellm_operating_points(probs[:, 1] - p_weak, weak, strong, scale=1.0)
    assert [(p.strong_pct, p.quality) for p in ours] == pytest.approx([(p.strong_pct, p.quality) for p in theirs])


def test_nondecreasing_convex_hull_lifts_points_under_a_chord_and_drops_decreases():
    # (1, 1) lies under the chord from (0, 0) to (2, 4): lifted to 2; (3, 3) falls below (2, 4): dropped
    hull = M.nondecreasing_convex_hull(np.array([[0, 0], [1, 1], [2, 4], [3, 3]], dtype=float))
    assert hull.tolist() == [[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]]


def test_aiq_hand_computed():
    # router A: hull (0,0),(1,2),(2,4) -> extended to cost 4 at quality 4: area 1 + 3 + 8 = 12, / 4 = 3
    # router B: a single point (4, 1): area 0 -> AIQ 0 (RouterBench starts the area at the hull's first cost)
    a, b = M.aiq([np.array([[0, 0], [1, 1], [2, 4], [3, 3]], dtype=float), np.array([[4.0, 1.0]])])
    assert a == pytest.approx(3.0) and b == pytest.approx(0.0)


def test_aiq_of_a_flat_router_is_its_quality():
    assert M.aiq([np.array([[1.0, 0.7], [2.0, 0.7]]), np.array([[0.0, 0.7], [2.0, 0.7]])]) == \
        pytest.approx([0.35, 0.7])


def test_expected_calibration_error_hand_computed():
    # bin 0 (p=.05, two samples, one adequate): |.5-.05| = .45 ; bin 9 (p=.95 and 1.0, both adequate): |1-.975|
    ece, diagram = M.expected_calibration_error([0.05, 0.05, 0.95, 1.0], [1, 0, 1, 1])
    assert ece == pytest.approx(0.5 * 0.45 + 0.5 * 0.025)
    assert [(d["bin"], d["count"]) for d in diagram] == [(0, 2), (9, 2)]
    assert M.expected_calibration_error([0.3, 0.3], [0, 1])[0] == pytest.approx(0.2)
