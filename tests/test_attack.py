"""Routing gadgets ("Rerouting LLM Routers", Shafran et al., 2025) against the shipped router, white-box and
in-process, on a small seeded set: the gadget (from tokenizer words, or from plain words) flips decisions without
the defence; the shipped gadget guard flags some of the prompts that carry it and cuts its flips, while it leaves
clean prompts alone. It does not reach the issue's goal against an attacker who searches with the guard on
(README, "Routing gadgets"), so that is measured by `router attack --defence on`, not asserted here."""
import random

import pytest

from models.catalogue import load_catalogue
from router.classifier import AdequacyClassifier
from router.features import Encoder
from router.guard import GadgetGuard
from router.offline.attack import (UP, WhiteBoxView, find_gadget, flip_rates, natural_vocabulary,
                                   token_vocabulary)
from router.offline.guard_train import held_out
from router.offline.outcomes import load_outcomes
from router.policy import DEFAULT_POLICY_PATH, load_policy


@pytest.fixture(scope="module")
def setup():
    policy = load_policy(DEFAULT_POLICY_PATH)
    catalogue, encoder = load_catalogue(), Encoder(threads=2)
    classifier = AdequacyClassifier.load(policy.classifier_path())
    guard = GadgetGuard.load(policy.guard.artifact_path(), dims=catalogue.encoder.dimensions)
    prompts = list(dict.fromkeys(load_outcomes("data/outcomes/default.csv").prompts))
    rng = random.Random(0)
    search = rng.sample([p for p in prompts if not held_out(p)], 8)
    test = rng.sample([p for p in prompts if held_out(p)], 40)
    off = policy.model_copy(update={"guard": policy.guard.model_copy(update={"enabled": False})})
    on = policy.model_copy(update={"guard": policy.guard.model_copy(update={"enabled": True})})
    return {"undefended": WhiteBoxView(classifier, off, catalogue, encoder),
            "defended": WhiteBoxView(classifier, on, catalogue, encoder, guard),
            "encoder": encoder, "search": search, "test": test, "prompts": prompts}


@pytest.mark.parametrize("direction,vocabulary", [(UP, "tokens"), (UP, "natural")])
def test_a_gadget_flips_decisions_without_the_guard_and_is_caught_with_it(setup, direction, vocabulary):
    words = (token_vocabulary(setup["encoder"]) if vocabulary == "tokens"
             else natural_vocabulary([p for p in setup["prompts"] if not held_out(p)]))
    gadget = find_gadget(setup["undefended"], setup["search"], direction, words, length=8, candidates=16, seed=3,
                         progress=False)
    undefended = flip_rates(setup["undefended"], setup["test"], gadget.text)
    assert undefended[direction] >= 0.2, undefended  # the attack works on held-out prompts
    defended = flip_rates(setup["defended"], setup["test"], gadget.text)
    assert defended["flagged"] > 0 and defended["clean_flagged"] <= 0.05, defended
    assert defended[direction] < undefended[direction], (undefended, defended)


def test_the_search_rejects_bad_settings(setup):
    with pytest.raises(ValueError, match="direction must be"):
        find_gadget(setup["undefended"], setup["search"], "sideways", ["word"])
    with pytest.raises(ValueError, match="needs prompts"):
        find_gadget(setup["undefended"], [], UP, ["word"])
