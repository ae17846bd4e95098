"""A black-box gadget search through the real ensemble's HTTP API, with the defence on: the gadget guard refusing
flagged prompts (action reject) and routing details withheld (access.disclose_routing false), so the search sees
only which model would answer and the 400s. On a small seeded set, a search for a 10-word gadget (the paper's
length) from the router's own tokenizer words stays under issue 14's goal (<= 5% flips each way), most gadget
prompts are refused, and no clean prompt is. README "Routing gadgets" has the full-size runs, and the shorter and
plain-word gadgets that still get through (so those are measured there, not asserted here)."""
import json
import random

import pytest

from router.offline.attack import DOWN, UP, find_gadget, flip_rates, token_vocabulary
from router.offline.attack_http import HttpView
from router.offline.guard_train import held_out
from router.offline.outcomes import load_outcomes
from router.serving.local_ensemble import wait_for

pytestmark = pytest.mark.serve


@pytest.fixture(scope="module")
def defended(ensemble):
    original = ensemble.policy()["policy"]
    closed = json.loads(json.dumps(original))
    closed["version"] = "defended"
    closed["guard"] = {**closed.get("guard", {}), "enabled": True, "action": "reject"}
    closed["access"] = {**closed.get("access", {}), "disclose_routing": False}
    ensemble.deploy_policy(closed)
    try:
        wait_for(lambda: ensemble.policy()["version"] == "defended", 60, "the defended policy to go live")
        yield HttpView(ensemble.base)
    finally:
        ensemble.deploy_policy(original)
        wait_for(lambda: ensemble.policy()["version"] == original["version"], 60, "the original policy")


@pytest.fixture(scope="module")
def vocabulary():
    from router.features import Encoder

    return token_vocabulary(Encoder(threads=1))


@pytest.mark.parametrize("direction", [UP, DOWN])
def test_a_black_box_search_with_the_defence_on_stays_under_the_goal(defended, vocabulary, direction):
    prompts = list(dict.fromkeys(load_outcomes("data/outcomes/default.csv").prompts))
    rng = random.Random(5)
    search = rng.sample([p for p in prompts if not held_out(p)], 8)
    test = rng.sample([p for p in prompts if held_out(p)], 40)
    gadget = find_gadget(defended, search, direction, vocabulary, length=10,
                         candidates=12, seed=5, progress=False)
    rates = flip_rates(defended, test, gadget.text)
    assert rates["clean_small"] > 0 and rates["clean_large"] > 0, rates  # both directions can be measured
    assert rates[UP] <= 0.05 and rates[DOWN] <= 0.05, rates
    assert rates["flagged"] >= 0.5 and rates["clean_flagged"] <= 0.02, rates
