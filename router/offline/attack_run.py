"""The `router attack` and `router guard train` commands: gadget searches against the shipped router (white-box,
transfer from a surrogate, or black-box over HTTP) and the flip rates they reach on held-out prompts, with the
gadget guard off or on."""
from __future__ import annotations

import json
import random
from pathlib import Path

from router.offline.attack import DOWN, UP, WhiteBoxView, find_gadget, flip_rates
from router.offline.guard_train import (clean_prompts, fit_guard, held_out, search_gadgets, vocabularies_for)


def _router(policy_path: str):
    from models.catalogue import load_catalogue
    from router.classifier import AdequacyClassifier
    from router.features import Encoder, Encoders
    from router.policy import load_policy

    policy = load_policy(policy_path)
    classifier = AdequacyClassifier.load(policy.classifier_path())
    # the embeddings the router was trained on (`router train --encoder`), for the search and for the guard
    return policy, classifier, load_catalogue(), Encoders(Encoder(threads=2)).get(classifier.encoder_name)


def _with_guard(policy, enabled: bool):
    return policy.model_copy(update={"guard": policy.guard.model_copy(update={"enabled": enabled})})


def _table_prompts(path: str) -> list[str]:
    from router.offline.outcomes import load_outcomes

    return list(dict.fromkeys(load_outcomes(path).prompts))


def guard_train_command(args) -> dict:
    from router.offline.train import embed

    policy, classifier, catalogue, encoder = _router(args.policy)
    prompts = _table_prompts(args.table)
    searchable = [p for p in prompts if not held_out(p)]
    vocabularies = vocabularies_for(encoder, searchable)
    view = WhiteBoxView(classifier, _with_guard(policy, False), catalogue, encoder)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    gadgets = search_gadgets(view, searchable, vocabularies, args.searches, out.with_suffix(".gadgets.json"),
                             seed=args.seed)
    clean = clean_prompts(prompts, seed=args.seed)

    def fit(found: list[dict]):
        return fit_guard(clean, [g["text"] for g in found], vocabularies,
                         lambda texts: embed(list(texts), encoder, desc="embed")[0], args.target_fpr, args.seed)

    guard, metrics = fit(gadgets)
    for round_ in range(1, args.adversarial_rounds + 1):
        # adversarial training: search again with this guard on (a flagged prompt counts as a failed attack),
        # and refit on everything found so far
        defended = WhiteBoxView(classifier, _with_guard(policy, True), catalogue, encoder, guard)
        gadgets += search_gadgets(defended, searchable, vocabularies, args.searches,
                                  out.with_suffix(f".round{round_}.gadgets.json"), seed=args.seed + 100 * round_)
        guard, metrics = fit(gadgets)
    guard.metadata.update(gadgets=gadgets, adversarial_rounds=args.adversarial_rounds, encoder=encoder.name)
    guard.save(out)
    return {"out": str(out), "adversarial_rounds": args.adversarial_rounds, **metrics}


def _surrogate(prompts_table: str, encoder, seed: int):
    """A router the attacker trained on other data: family lr on a random half of the prompts, not the artifact."""
    import numpy as np

    from router.families import make_family
    from router.offline.outcomes import load_outcomes
    from router.offline.train import fit_table, table_features

    table = load_outcomes(prompts_table)
    features, _ = table_features(table, encoder)
    unique = list(dict.fromkeys(table.prompts))
    half = set(random.Random(seed).sample(unique, len(unique) // 2))
    rows = np.flatnonzero([p in half for p in table.prompts])
    return fit_table(table, features, rows, make_family("lr"), metadata={"surrogate": "lr on half the prompts"})


def attack_command(args) -> dict:
    policy, classifier, catalogue, encoder = _router(args.policy)
    defended = args.defence == "on"
    if defended and not policy.guard.artifact_path().exists():
        raise ValueError(f"--defence on needs the guard {policy.guard.artifact_path()}: run `router guard train`")
    measured_policy = _with_guard(policy, defended)
    guard = None
    if defended:
        from router.guard import GadgetGuard

        guard = GadgetGuard.load(policy.guard.artifact_path(), dims=catalogue.encoder.dimensions)
        guard.check_encoder(encoder.name, catalogue.encoder.name)
    prompts = _table_prompts(args.table)
    rng = random.Random(args.seed)
    test = rng.sample([p for p in prompts if held_out(p)], min(args.test_prompts, sum(map(held_out, prompts))))
    searchable = [p for p in prompts if not held_out(p)]
    search = rng.sample(searchable, min(args.search_prompts, len(searchable)))
    vocabularies = vocabularies_for(encoder, searchable)
    measure = WhiteBoxView(classifier, measured_policy, catalogue, encoder, guard)
    if args.mode == "black-box":
        from router.offline.attack_http import HttpView

        measure = search_view = HttpView(args.url, api_key=args.api_key)
    elif args.mode == "transfer":
        search_view = WhiteBoxView(_surrogate(args.table, encoder, args.seed), _with_guard(policy, False), catalogue,
                                   encoder)
    elif defended and not args.adaptive:  # the gadget was found without the guard: does the guard catch it?
        search_view = WhiteBoxView(classifier, _with_guard(policy, False), catalogue, encoder)
    else:
        search_view = measure
    results = {"mode": args.mode, "defence": args.defence, "adaptive": args.adaptive, "vocabulary": args.vocabulary,
               "runs": []}
    for direction in ([UP, DOWN] if args.direction == "both" else [args.direction]):
        gadget = find_gadget(search_view, search, direction, vocabularies[args.vocabulary], length=args.length,
                             candidates=args.candidates, rounds=args.rounds, seed=args.seed)
        rates = flip_rates(measure, test, gadget.text)
        results["runs"].append({"direction": direction, "gadget": gadget.text, "search_objective": gadget.objective,
                                **rates})
    if args.mode == "black-box":
        results["http_requests"] = measure.requests
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
    return results
