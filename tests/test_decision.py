"""The routing decision is a pure function: no Ray, no I/O."""
import subprocess
import sys

import pytest

from models.catalogue import load_catalogue
from router.decision import (CHEAPEST_CONFIDENT, FALLBACK_NONE_ELIGIBLE, FALLBACK_NOT_CONFIDENT, INPUT_TOO_LONG,
                             PINNED, decide, pin)
from router.policy import parse_policy

CATALOGUE = load_catalogue()
SMOL, CODER, LARGE = "smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"


def policy(**overrides):
    data = {"version": "t", "fallback": LARGE, "models": {
        SMOL: {"threshold": 0.6, "tasks": ["chat"], "max_input_tokens": 100},
        CODER: {"threshold": 0.5, "tasks": ["code", "chat"]},
        LARGE: {"max_input_tokens": 1000}}}
    for name, change in overrides.items():
        data["models"][name].update(change)
    return parse_policy(data, "test", CATALOGUE)


def test_cheapest_confident_model_wins():
    d = decide({SMOL: 0.9, CODER: 0.95}, "chat", 10, policy(), CATALOGUE)
    assert (d.model, d.rule) == (SMOL, CHEAPEST_CONFIDENT)
    assert d.thresholds == {SMOL: 0.6, CODER: 0.5} and d.eligible == (SMOL, CODER)
    assert "smollm2-135m" in d.reason and "0.90" in d.reason


def test_ineligible_task_skips_a_confident_model():
    d = decide({SMOL: 0.99, CODER: 0.7}, "code", 10, policy(), CATALOGUE)
    assert (d.model, d.rule, d.eligible) == (CODER, CHEAPEST_CONFIDENT, (CODER,))


def test_too_long_input_makes_a_model_ineligible():
    d = decide({SMOL: 0.99, CODER: 0.99}, "chat", 500, policy(), CATALOGUE)
    assert d.model == CODER and d.eligible == (CODER,)


def test_no_confident_model_goes_to_the_fallback():
    d = decide({SMOL: 0.59, CODER: 0.49}, "chat", 10, policy(), CATALOGUE)
    assert (d.model, d.rule) == (LARGE, FALLBACK_NOT_CONFIDENT)
    assert "0.59<0.60" in d.reason


def test_no_eligible_model_goes_to_the_fallback():
    d = decide({SMOL: 1.0, CODER: 1.0}, "math", 10, policy(), CATALOGUE)
    assert (d.model, d.rule, d.eligible) == (LARGE, FALLBACK_NONE_ELIGIBLE, ())


def test_models_out_of_auto_routing_always_fall_back_but_can_be_named():
    p = policy(**{SMOL: {"auto_route": False}, CODER: {"auto_route": False}})
    assert decide({SMOL: 1.0, CODER: 1.0}, "chat", 10, p, CATALOGUE).model == LARGE
    assert pin(SMOL, "chat", 10, p, CATALOGUE).model == SMOL


def test_input_too_long_for_every_model():
    d = decide({SMOL: 0.1, CODER: 0.1}, "chat", 5000, policy(), CATALOGUE)
    assert (d.model, d.rule) == (None, INPUT_TOO_LONG)


def test_cost_override_in_the_policy_changes_the_order():
    p = policy(**{SMOL: {"cost_per_1k_input": 1.0}})
    assert decide({SMOL: 0.9, CODER: 0.9}, "chat", 10, p, CATALOGUE).model == CODER


def test_pin_honours_a_named_model_and_refuses_unknown_ones():
    d = pin(CODER, "chat", 10, policy(), CATALOGUE)
    assert (d.model, d.rule) == (CODER, PINNED)
    with pytest.raises(KeyError):
        pin("gpt-9", "chat", 10, policy(), CATALOGUE)


def test_the_decision_module_imports_no_ray():
    code = "import sys, router.decision; sys.exit(1 if any(m == 'ray' or m.startswith('ray.') for m in sys.modules) else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_fallback_chain_tries_the_next_eligible_models_then_the_fallback():
    from router.decision import fallback_chain

    p = policy()
    chosen = decide({SMOL: 0.9, CODER: 0.9}, "chat", 10, p, CATALOGUE)
    assert fallback_chain(chosen, p) == [SMOL, CODER, LARGE]
    assert fallback_chain(decide({SMOL: 0.1, CODER: 0.9}, "chat", 10, p, CATALOGUE), p) == [CODER, LARGE]
    assert fallback_chain(decide({SMOL: 0.1, CODER: 0.1}, "chat", 10, p, CATALOGUE), p) == [LARGE]
    assert fallback_chain(pin(SMOL, "chat", 10, p, CATALOGUE), p) == [SMOL, LARGE]


def test_a_session_never_drops_below_the_tier_it_reached():
    from router.decision import SESSION_FLOOR, apply_session_floor

    p = policy()
    tiny = decide({SMOL: 0.9, CODER: 0.9}, "chat", 10, p, CATALOGUE)
    lifted = apply_session_floor(tiny, CODER, p, CATALOGUE)
    assert (lifted.model, lifted.rule) == (CODER, SESSION_FLOOR) and "smollm2-135m" in lifted.reason
    assert apply_session_floor(tiny, None, p, CATALOGUE) is tiny
    large = decide({SMOL: 0.1, CODER: 0.1}, "chat", 10, p, CATALOGUE)
    assert apply_session_floor(large, CODER, p, CATALOGUE) is large  # already above the floor
    assert apply_session_floor(tiny, CODER, p.model_copy(update={"session_keeps_tier": False}), CATALOGUE) is tiny
    assert apply_session_floor(pin(SMOL, "chat", 10, p, CATALOGUE), CODER, p, CATALOGUE).model == SMOL


def test_should_escalate():
    from router.decision import should_escalate

    assert should_escalate(-1.5, -1.0) and not should_escalate(-0.5, -1.0)
    assert not should_escalate(None, -1.0) and not should_escalate(-9.0, None)


def test_moderation_band_is_inclusive_and_outside_it_the_specialist_decides():
    from router.decision import large_model_flags, moderation_needs_large_model, specialist_flags

    data = {"version": "t", "fallback": LARGE, "models": {LARGE: {}},
            "moderation": {"uncertain_band": [0.3, 0.6], "flag_threshold": 0.5}}
    moderated = parse_policy(data, "test", CATALOGUE)
    assert [moderation_needs_large_model(p, moderated) for p in (0.29, 0.3, 0.45, 0.6, 0.61)] == \
        [False, True, True, True, False]
    assert not specialist_flags(0.29, moderated) and specialist_flags(0.61, moderated)
    assert large_model_flags("Offensive: Yes.") and large_model_flags("yes")
    assert not large_model_flags("No") and not large_model_flags("") and not large_model_flags("yes, but no")


def tool_callers(*names):
    """The catalogue with `names` marked as making tool calls (a copy, unvalidated: only remote entries may say so,
    and the pure decision reads the flag alone)."""
    return CATALOGUE.model_copy(update={"models": [m.model_copy(update={"tool_calls": m.name in names})
                                                   for m in CATALOGUE.models]})


def test_a_request_with_tools_is_decided_among_the_models_that_make_tool_calls():
    from router.decision import NO_TOOL_CALLS, fallback_chain, refuse_tools, tool_calling

    p = policy()
    assert tool_calling(p, CATALOGUE) is None  # the shipped GGUF models make none
    refused = refuse_tools("auto", p, None, "chat", 10)
    assert (refused.model, refused.rule) == (None, NO_TOOL_CALLS) and "tool_calls: true" in refused.reason
    # the fallback makes them: it stays the fallback, and only the small models that make them remain
    both = tool_calling(p, tool_callers(CODER, LARGE))
    assert (list(both.models), both.fallback) == ([CODER, LARGE], LARGE)
    d = decide({SMOL: 0.9, CODER: 0.9}, "chat", 10, both, CATALOGUE)
    assert d.model == CODER and fallback_chain(d, both) == [CODER, LARGE]
    # the fallback does not: the costliest model that does takes its place, so no chain reaches a model without
    small = tool_calling(p, tool_callers(SMOL, CODER))
    assert (list(small.models), small.fallback) == ([SMOL, CODER], CODER)
    d = decide({SMOL: 0.1, CODER: 0.1}, "chat", 10, small, CATALOGUE)
    assert (d.model, fallback_chain(d, small)) == (CODER, [CODER])
    assert refuse_tools("auto", p, small, "chat", 10) is None and refuse_tools(CODER, p, small, "chat", 10) is None
    named = refuse_tools(LARGE, p, small, "chat", 10)
    assert named.model is None and named.reason == f"{LARGE} does not make tool calls; the models that do are " \
                                                   f"{[CODER, SMOL]}"
    assert p.fallback == LARGE and list(p.models) == [SMOL, CODER, LARGE]  # the live policy is left as it was


def test_on_advantage_a_threshold_holds_the_standing_against_the_fallback():
    """(1 + P(model) - P(fallback)) / 2: a prompt every model is predicted to fail stays on a small model."""
    from router.decision import confidence

    p = policy().model_copy(update={"threshold_on": "advantage"})
    hopeless = {SMOL: 0.2, CODER: 0.1, LARGE: 0.1}  # standings 0.55 and 0.5
    assert confidence(hopeless, SMOL, p) == pytest.approx(0.55) and confidence(hopeless, LARGE, policy()) == 0.1
    assert decide(hopeless, "chat", 10, policy(), CATALOGUE).model == LARGE  # adequacy: nobody reaches 0.6
    d = decide(hopeless, "chat", 10, p, CATALOGUE)
    assert (d.model, d.rule) == (CODER, CHEAPEST_CONFIDENT)  # SMOL 0.55 < 0.6; CODER 0.5 >= 0.5
    assert d.confidence == pytest.approx({SMOL: 0.55, CODER: 0.5})
    assert "standing against qwen2.5-coder-1.5b 0.50 (P 0.10 against 0.10) >= 0.50" in d.reason
    d = decide({SMOL: 0.9, CODER: 0.7, LARGE: 0.95}, "chat", 10, p, CATALOGUE)  # 0.475, 0.375: the large one wins
    assert (d.model, d.rule) == (LARGE, FALLBACK_NOT_CONFIDENT) and "0.47 (P 0.90 against 0.95)<0.60" in d.reason
    # without the fallback's score there is no standing: no small model is confident
    assert decide({SMOL: 0.9, CODER: 0.9}, "chat", 10, p, CATALOGUE).model == LARGE


def test_on_advantage_one_threshold_makes_the_reports_sweep_choice_at_each_cut():
    """One decision, online and offline: the sweep's choice at cut c is decide() with every threshold (1 - c) / 2."""
    import numpy as np

    from router.offline.decisions import decide_rows
    from router.offline.report import at_cut

    models = [SMOL, CODER, LARGE]
    probs = np.random.default_rng(3).random((400, 3))
    p = policy(**{SMOL: {"tasks": ["chat", "code", "math"], "max_input_tokens": None}})
    p = p.model_copy(update={"threshold_on": "advantage"})
    for cut in (-0.503, -0.211, 0.0371, 0.113, 0.2917, 0.6043):  # no row's advantage lies on a cut
        thresholds = {SMOL: (1 - cut) / 2, CODER: (1 - cut) / 2}
        served = decide_rows(models, probs, ["chat"] * len(probs), [10] * len(probs), p.with_thresholds(thresholds),
                             CATALOGUE)
        assert (served == at_cut(probs, cut)).all()
        assert 0 < (served == 2).mean() < 1 or cut < -0.5
