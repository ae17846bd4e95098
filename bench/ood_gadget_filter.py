"""The out-of-distribution check as a deliberate gadget filter (issue 14): tighten its threshold and measure what
it stops and what it costs clean traffic.

    .venv/bin/python bench/ood_gadget_filter.py --out bench   # about 45 minutes; writes ood_gadget_filter.md/.json
    .venv/bin/python bench/ood_gadget_filter.py --out bench --guard --quantiles 0.97,0.7   # guard on too, 15 min;
                                                              # writes ood_gadget_filter_guard.md/.json

A prompt farther from every training prompt than the threshold goes to the fallback (rule out_of_distribution),
so a tighter threshold should stop gadgets that push a prompt down to a small model, and can only help gadgets
that push it up. Per seed, the default table is split in half by prompt; the shipped family is fitted on one half,
and the policy's `ood.quantile` sets the threshold: that quantile of its training prompts' leave-one-out
neighbour distances (the artifact's own threshold is the 0.97 quantile).
Per quantile it measures, on the other half, decided by router.decision.decide under serve_config.yaml's policy:
- clean traffic: the share flagged out of distribution, the quality kept and the cost saved against always-large;
- gadgets, on every held-out prompt: `router attack`'s white-box search (10 tokenizer words, 24 candidates, 16
  search prompts from the training half) run against the router with that threshold (adaptive), and the gadget
  found at the first quantile (0.97 by default) measured at every threshold (not adaptive): the share of held-out decisions flipped up and down.
With `--guard` the shipped gadget guard is on too, action `reject` (a refused prompt is no flip and, on clean
traffic, quality 0 at cost 0), and the search runs against both; gadgets are then measured only on held-out
prompts that guard training never saw (`guard_train.held_out`), since its clean rows are the rest.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.guard_quality import outcome  # noqa: E402
from models.catalogue import load_catalogue  # noqa: E402
from router.classifier import AdequacyClassifier  # noqa: E402
from router.decision import OUT_OF_DISTRIBUTION  # noqa: E402
from router.features import Encoder  # noqa: E402
from router.guard import GadgetGuard  # noqa: E402
from router.offline.attack import DOWN, UP, WhiteBoxView, find_gadget, flip_rates, prefixed, token_vocabulary  # noqa: E402,E501
from router.offline.guard_train import held_out  # noqa: E402
from router.offline.outcomes import load_outcomes  # noqa: E402
from router.offline.train import fit_table, split_by_prompt, table_features  # noqa: E402
from router.policy import load_policy  # noqa: E402

QUANTILES = (0.97, 0.9, 0.8, 0.7, 0.5)


def ood_share(view: WhiteBoxView, texts: list[str]) -> float:
    return float(np.mean([d.rule == OUT_OF_DISTRIBUTION for d in view.decisions(texts)]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", default="0,1,2", help="clean-traffic splits (comma-separated)")
    parser.add_argument("--attack-seeds", default="0,1,2", help="the splits the gadget searches run on")
    parser.add_argument("--test-prompts", type=int, default=1000,
                        help="held-out prompts the gadgets are measured on (at most the half)")
    parser.add_argument("--quantiles", default=",".join(map(str, QUANTILES)),
                        help="the OOD quantiles measured (comma-separated, each in (0, 1]); 0.97 is the shipped one")
    parser.add_argument("--guard", action="store_true", help="the shipped gadget guard on too, action reject")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
        attack_seeds = [int(s) for s in args.attack_seeds.split(",")]
    except ValueError:
        parser.error("--seeds and --attack-seeds are whole numbers separated by commas")
    try:
        quantiles = tuple(float(q) for q in args.quantiles.split(","))
    except ValueError:
        parser.error(f"--quantiles must be numbers separated by commas, not {args.quantiles!r}")
    if not all(0 < q <= 1 for q in quantiles):
        parser.error(f"--quantiles must each lie in (0, 1], not {args.quantiles}")
    if args.test_prompts < 1:
        parser.error(f"--test-prompts must be at least 1, not {args.test_prompts}")
    policy, catalogue = load_policy(ROOT / "serve_config.yaml"), load_catalogue()
    guard = GadgetGuard.load(policy.guard.artifact_path(), dims=catalogue.encoder.dimensions) if args.guard else None
    policy = policy.model_copy(update={"guard": policy.guard.model_copy(
        update={"enabled": args.guard, "action": "reject"})})
    shipped = AdequacyClassifier.load(policy.classifier_path())
    table = load_outcomes(ROOT / "data/outcomes/default.csv", catalogue.names())
    encoder = Encoder(threads=2)
    features, tokens = table_features(table, encoder)
    # the embedding part, as router/service.py passes it to the guard
    flags = guard.flags(features[:, :-1]) if guard is not None else np.zeros(len(table.prompts), bool)
    vocabulary = token_vocabulary(encoder)
    rows = []
    for seed in sorted(set(seeds) | set(attack_seeds)):
        train, test = split_by_prompt(table, 0.5, seed)
        clf = fit_table(table, features, train, type(shipped.family)(**shipped.family.params))
        rng = np.random.default_rng(seed)
        train_prompts = list(dict.fromkeys(table.prompts[i] for i in train))
        test_prompts = [t for t in dict.fromkeys(table.prompts[i] for i in test) if guard is None or held_out(t)]
        search = [train_prompts[i] for i in rng.permutation(len(train_prompts))[:16]]
        held = [test_prompts[i] for i in rng.permutation(len(test_prompts))[:args.test_prompts]]
        fixed = {}  # the gadgets found against the first quantile's threshold, measured at every threshold
        for q in quantiles:
            strict = policy.model_copy(update={"ood": policy.ood.model_copy(update={"quantile": q})})
            row = {"seed": seed, "quantile": q, "threshold": clf.ood_threshold_at(q),
                   **outcome(table, features, tokens, test, clf, strict, catalogue, flags[test])}
            view = WhiteBoxView(clf, strict, catalogue, encoder, guard)
            row["clean_ood"] = ood_share(view, [table.prompts[i] for i in test])
            if seed in attack_seeds:
                for direction in (UP, DOWN):
                    gadget = find_gadget(view, search, direction, vocabulary, seed=5)
                    fixed.setdefault(direction, gadget.text)
                    rates = flip_rates(view, held, gadget.text)
                    row[f"{direction}_adaptive"] = rates[direction]
                    row[f"{direction}_adaptive_ood"] = ood_share(view, prefixed(gadget.text, held))
                    row[f"{direction}_adaptive_refused"] = rates["flagged"]
                    row[f"{direction}_fixed"] = flip_rates(view, held, fixed[direction])[direction]
                    row[f"{direction}_gadget"] = gadget.text
                row["held_small"], row["held_large"] = rates["clean_small"], rates["clean_large"]
                row["held_refused"] = rates["clean_flagged"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    name = "ood_gadget_filter_guard" if args.guard else "ood_gadget_filter"
    command = "bench/ood_gadget_filter.py --out bench" + (f" --guard --quantiles {args.quantiles}" if args.guard else "")
    guard_words = "the shipped guard on, action reject" if args.guard else "the guard off"
    lines = [f"# The out-of-distribution check as a gadget filter (`.venv/bin/python {command}`)", "",
             f"Default table, half held out per seed (seeds {seeds}), family {shipped.family.label()}, "
             f"serve_config.yaml's policy with {guard_words}.", "",
             "| OOD quantile | threshold | clean flagged OOD | clean refused by the guard | quality kept | cost saved |",
             "|---|---|---|---|---|---|"]
    for q in quantiles:
        mine = [r for r in rows if r["quantile"] == q and r["seed"] in seeds]
        lines.append(f"| {q} | " + ", ".join(f"{r['threshold']:.3f}" for r in mine) + " | "
                     + ", ".join(f"{r['clean_ood']:.1%}" for r in mine) + " | "
                     + ", ".join(f"{r['refused']}/{r['rows']}" for r in mine) + " | "
                     + ", ".join(f"{r['quality_kept']:.1%}" for r in mine) + " | "
                     + ", ".join(f"{r['cost_saved']:.1%}" for r in mine) + " |")
    held_words = ", those guard training never saw" if args.guard else ""
    lines += ["", f"Gadgets on the held-out prompts{held_words}, counted in the second column (seeds {attack_seeds}; "
              "flips up are of the prompts a small model got, down of those the large one got):", "",
              f"| OOD quantile | held-out small / large | up, adaptive | up, {quantiles[0]}'s gadget | down, adaptive | "
              f"down, {quantiles[0]}'s gadget | adaptive gadget prompts flagged OOD (up / down) | refused (up / down) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in (r for r in rows if r["seed"] in attack_seeds):
        lines.append(f"| {r['quantile']} (seed {r['seed']}) | {r['held_small']} / {r['held_large']} | "
                     f"{r['up_adaptive']:.1%} | {r['up_fixed']:.1%} | {r['down_adaptive']:.1%} | "
                     f"{r['down_fixed']:.1%} | {r['up_adaptive_ood']:.0%} / {r['down_adaptive_ood']:.0%} | "
                     f"{r['up_adaptive_refused']:.0%} / {r['down_adaptive_refused']:.0%} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"rows": rows, "guard": args.guard}, indent=1))
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
