"""Issue 14: a router whose decision leans less on a prefix. Does training the shipped family on copies of its
prompts behind random word runs (each copy keeps its prompt's outcomes) make gadgets flip fewer decisions, and
what does it cost clean routing?

For each router (the shipped knn k=64 on the default table; the same family trained with `--copies` augmented
copies of every searchable prompt, at k=64 and at k scaled by the copies; and adversarially trained: those copies
plus, for each of `--adversarial-rounds` rounds, copies behind 8 gadgets searched against the router of the round
before):
- clean routing: out-of-fold predictions on the clean prompts (5 folds by prompt, an augmented copy always in its
  prompt's fold, 3 seeds): the sweep's area (the `router train` criterion) and RouterBench's AIQ;
  and, under serve_config.yaml's policy, quality kept and cost saved on half-table splits (as guard_quality.py);
- gadgets: the white-box greedy search of `router attack` (10 words, 24 candidates a step, 16 search prompts,
  seed 5) against that router, tokenizer words and plain words, both directions, guard off; the flips measured on
  the 100 held-out prompts `router attack` uses. Held-out prompts never get augmented copies, so a flip there
  shows what a new prompt would get.

    .venv/bin/python bench/prefix_augmentation.py --out bench    # about 20 minutes; writes prefix_augmentation.md/.json
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.catalogue import load_catalogue  # noqa: E402
from router.families import make_family  # noqa: E402
from router.features import Encoder  # noqa: E402
from router.offline.attack import DOWN, UP, WhiteBoxView, find_gadget, flip_rates  # noqa: E402
from router.offline.guard_train import held_out, vocabularies_for  # noqa: E402
from router.offline.outcomes import OutcomeTable, load_outcomes  # noqa: E402
from router.offline.select import prompt_folds, sweep_measures  # noqa: E402
from router.offline.train import fit_table, table_features  # noqa: E402
from router.policy import load_policy  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from guard_quality import outcome  # noqa: E402

TABLE = ROOT / "data" / "outcomes" / "default.csv"


def augmented(table: OutcomeTable, copies: int, vocabularies: dict, seed: int) -> tuple[OutcomeTable, np.ndarray]:
    """The table plus `copies` rows per searchable prompt behind a random run of 2-12 words (tokenizer words or
    plain words, half each), with the prompt's outcomes; and, per row, the index of the clean row it copies."""
    rng = random.Random(seed)
    words = vocabularies["tokens"], vocabularies["natural"]
    source = [i for i, p in enumerate(table.prompts) if not held_out(p)]
    extra = table.frame.iloc[[i for i in source for _ in range(copies)]].copy()
    extra["prompt"] = [" ".join(rng.choice(words[n % 2]) for _ in range(rng.randint(2, 12))) + " " + p
                       for n, p in enumerate(extra["prompt"])]
    frame = pd.concat([table.frame, extra], ignore_index=True)
    origin = np.concatenate([np.arange(len(table)), np.repeat(source, copies)])
    return OutcomeTable(frame, table.models), origin


def adversarial(table, aug_table, aug_features, origin, k, rounds, policy, catalogue, encoder, vocabularies):
    """Adversarial training of the router itself: each round searches gadgets against the current router (both
    directions, both vocabularies, 2 seeds, on searchable prompts only), adds a copy of every searchable prompt
    behind each gadget with the prompt's outcomes, and refits."""
    searchable = [p for p in dict.fromkeys(table.prompts) if not held_out(p)]
    source = [i for i, p in enumerate(table.prompts) if not held_out(p)]
    for r in range(rounds):
        view = WhiteBoxView(fit_table(aug_table, aug_features, np.arange(len(aug_table)), make_family("knn", {"k": k})),
                            policy, catalogue, encoder)
        gadgets = [find_gadget(view, random.Random(100 + 10 * r + s).sample(searchable, 16), d, vocabularies[v],
                               length=10, candidates=24, seed=100 + 10 * r + s, progress=False).text
                   for s in range(2) for v in ("tokens", "natural") for d in (UP, DOWN)]
        extra = table.frame.iloc[[i for _ in gadgets for i in source]].copy()
        extra["prompt"] = [f"{g} {table.prompts[i]}" for g in gadgets for i in source]
        extra_table = OutcomeTable(extra.reset_index(drop=True), table.models)
        extra_features, _ = table_features(extra_table, encoder)
        aug_table = OutcomeTable(pd.concat([aug_table.frame, extra_table.frame], ignore_index=True), table.models)
        aug_features = np.vstack([aug_features, extra_features])
        origin = np.concatenate([origin, np.tile(source, len(gadgets))])
        print(f"round {r + 1}: {len(gadgets)} gadgets, {len(aug_table)} training rows", flush=True)
    return aug_table, aug_features, origin


def clean_routing(table, features, tokens, aug_table, aug_features, origin, k, policy, catalogue, seeds) -> dict:
    scores, costs, models = table.scores(), table.costs(), table.models
    n = len(table)
    measures, served = [], []
    for seed in seeds:
        fold = prompt_folds(table.prompts, 5, seed)
        probs = np.zeros((n, len(models)))
        for f in range(5):
            test = np.flatnonzero(fold == f)
            train = np.flatnonzero(fold[origin] != f)  # a copy goes with its prompt
            clf = fit_table(aug_table, aug_features, train, make_family("knn", {"k": k}))
            probs[test] = clf.predict_proba(features[test], [table.prompts[i] for i in test])
        measures.append(sweep_measures(probs, scores, costs, models))
        rng = np.random.default_rng(seed)
        test_half = np.flatnonzero(rng.permutation(n) < n // 2)
        train = np.flatnonzero(~np.isin(origin, test_half))
        clf = fit_table(aug_table, aug_features, train, make_family("knn", {"k": k}))
        served.append(outcome(table, features, tokens, test_half, clf, policy, catalogue, np.zeros(len(test_half), bool)))
    return {"area": [m["area"] for m in measures], "aiq": [m["aiq"] for m in measures],
            "quality_kept": [s["quality_kept"] for s in served], "cost_saved": [s["cost_saved"] for s in served]}


def gadget_flips(clf, policy, catalogue, encoder, prompts, vocabularies, seed: int = 5) -> list[dict]:
    rng = random.Random(seed)
    test = rng.sample([p for p in prompts if held_out(p)], 100)
    search = rng.sample([p for p in prompts if not held_out(p)], 16)
    view = WhiteBoxView(clf, policy, catalogue, encoder)
    runs = []
    for vocabulary in ("tokens", "natural"):
        for direction in (UP, DOWN):
            gadget = find_gadget(view, search, direction, vocabularies[vocabulary], length=10, candidates=24,
                                 rounds=1, seed=seed, progress=False)
            rates = flip_rates(view, test, gadget.text)
            runs.append({"vocabulary": vocabulary, "direction": direction, "gadget": gadget.text,
                         "flipped": rates[direction], "clean_small": rates["clean_small"],
                         "clean_large": rates["clean_large"]})
    return runs


def render(result: dict) -> str:
    lines = ["# A router trained behind random prefixes (issue 14)", "",
             f"Command: `.venv/bin/python bench/prefix_augmentation.py --out bench --copies {result['copies']} "
             f"--adversarial-rounds {result['adversarial_rounds']}`. "
             "Default table, family knn, serve_config.yaml's policy (thresholds as calibrated for the shipped "
             "router), guard off. Area and AIQ: out-of-fold over 5 folds by prompt, seeds "
             f"{result['seeds']}; quality kept and cost saved: half-table splits, same seeds.", "",
             "| router | area | AIQ | quality kept | cost saved | tokens up | tokens down | plain up | plain down |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["routers"].items():
        clean = r["clean"]
        flips = {(x["vocabulary"], x["direction"]): x["flipped"] for x in r["gadgets"]}
        mean = lambda xs: f"{np.mean(xs):.4f}"  # noqa: E731
        pct = lambda xs: f"{np.mean(xs):.1%} ({np.ptp(xs):.1%})"  # noqa: E731
        lines.append(f"| {name} | {mean(clean['area'])} | {mean(clean['aiq'])} | {pct(clean['quality_kept'])} | "
                     f"{pct(clean['cost_saved'])} | " + " | ".join(
                         f"{flips[(v, d)]:.1%}" for v in ("tokens", "natural") for d in (UP, DOWN)) + " |")
    lines += ["", "Quality kept and cost saved: mean over seeds (spread in brackets). Flips: the share of held-out "
              "decisions the gadget moves, up = small model to large, down = large to small."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--copies", type=int, default=4, help="augmented copies per searchable prompt (default 4)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--adversarial-rounds", type=int, default=3,
                        help="rounds of searching gadgets against the router and training on them (default 3; 0: none)")
    args = parser.parse_args(argv)
    if args.copies < 1 or args.adversarial_rounds < 0:
        parser.error("--copies must be at least 1 and --adversarial-rounds at least 0")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be whole numbers separated by commas, not {args.seeds!r}")
    policy, catalogue, encoder = load_policy(ROOT / "serve_config.yaml"), load_catalogue(), Encoder(threads=2)
    policy = policy.model_copy(update={"guard": policy.guard.model_copy(update={"enabled": False})})
    table = load_outcomes(TABLE, catalogue.names())
    features, tokens = table_features(table, encoder)
    prompts = list(dict.fromkeys(table.prompts))
    vocabularies = vocabularies_for(encoder, [p for p in prompts if not held_out(p)])
    aug_table, origin = augmented(table, args.copies, vocabularies, seed=0)
    aug_features, _ = table_features(aug_table, encoder)
    plain_origin = np.arange(len(table))
    variants = {"shipped: knn k=64, no copies": (table, features, plain_origin, 64),
                f"knn k=64, {args.copies} copies": (aug_table, aug_features, origin, 64),
                f"knn k={64 * (args.copies + 1)}, {args.copies} copies": (aug_table, aug_features, origin,
                                                                       64 * (args.copies + 1))}
    if args.adversarial_rounds:
        adv = adversarial(table, aug_table, aug_features, origin, 64, args.adversarial_rounds, policy, catalogue,
                          encoder, vocabularies)
        variants[f"knn k=64, {args.copies} copies + {args.adversarial_rounds} rounds of searched gadgets"] = (*adv, 64)
    result = {"copies": args.copies, "adversarial_rounds": args.adversarial_rounds, "seeds": seeds, "routers": {}}
    for name, (t, f, o, k) in variants.items():
        clean = clean_routing(table, features, tokens, t, f, o, k, policy, catalogue, seeds)
        full = fit_table(t, f, np.arange(len(t)), make_family("knn", {"k": k}))
        result["routers"][name] = {"k": k, "clean": clean,
                                   "gadgets": gadget_flips(full, policy, catalogue, encoder, prompts, vocabularies)}
        print(name, json.dumps({k2: np.round(v, 4).tolist() for k2, v in clean.items()}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prefix_augmentation.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "prefix_augmentation.md").write_text(render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
