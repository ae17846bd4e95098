"""Is one threshold rule harder to steer than the other? (issue 14) Gadgets against `threshold_on: adequacy` (as
shipped) and `threshold_on: advantage`, each rule calibrated on the same training half.

    .venv/bin/python bench/threshold_on_attack.py --out bench --guard     # about 12 minutes on 2 cores
    .venv/bin/python bench/threshold_on_attack.py --out bench --guard --vocabulary natural
    .venv/bin/python bench/threshold_on_attack.py --out bench             # the guard off

The reasoning to test: under `adequacy` a small model answers only when its P(adequate) clears a threshold, so a
gadget that escalates needs only to lower it (doubt); under `advantage` it must make the fallback likelier to
answer well than the small model by a margin, and one that pushes down must make the small model look as good as
the fallback, not merely good. Per seed, as bench/ood_gadget_filter.py does, the default table is split in half
by prompt and the shipped family is fitted on one half. Each rule's thresholds are calibrated as `router calibrate
--keep-quality 0.95` does (bench/threshold_on.calibrate_rule: the training half's 5-fold out-of-fold
predictions, grid step 0.05). On the other half it measures clean quality kept and cost saved, and then runs
`router attack`'s white-box search (10 words, 24 candidates, 16 search prompts from the training half, search
seed 5) against each rule's router, adaptive (against the guard too with `--guard`, action reject), and the
share of held-out decisions each gadget flips. With `--guard` the gadgets are measured only on held-out prompts
that guard training never saw.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench.guard_quality import outcome  # noqa: E402
from threshold_on import RULES, calibrate_rule  # noqa: E402

from models.catalogue import load_catalogue  # noqa: E402
from router.classifier import AdequacyClassifier  # noqa: E402
from router.families import make_family  # noqa: E402
from router.features import Encoder  # noqa: E402
from router.guard import GadgetGuard  # noqa: E402
from router.offline.attack import (DOWN, UP, WhiteBoxView, find_gadget, flip_rates, natural_vocabulary,  # noqa: E402
                                   token_vocabulary)
from router.offline.guard_train import held_out  # noqa: E402
from router.offline.outcomes import load_outcomes  # noqa: E402
from router.offline.select import out_of_fold  # noqa: E402
from router.offline.train import fit_table, split_by_prompt, table_features  # noqa: E402
from router.policy import load_policy  # noqa: E402


def attack_rule(view: WhiteBoxView, search: list[str], held: list[str], vocabulary: list[str]) -> dict:
    row = {}
    for direction in (UP, DOWN):
        gadget = find_gadget(view, search, direction, vocabulary, seed=5)
        rates = flip_rates(view, held, gadget.text)
        row[direction], row[f"{direction}_refused"], row[f"{direction}_gadget"] = (
            rates[direction], rates["flagged"], gadget.text)
        row["held_small"], row["held_large"], row["held_refused"] = (
            rates["clean_small"], rates["clean_large"], rates["clean_flagged"])
    return row


def render(rows: list[dict], guard: bool, vocabulary: str, family: str, command: str) -> str:
    lines = [f"# Gadgets against each threshold rule (`.venv/bin/python {command}`)", "",
             f"Default table, half held out per seed, family {family}, thresholds calibrated per rule for 95% of "
             f"always-large quality on the training half; white-box search with {vocabulary} words, the guard "
             f"{'on (reject), searched against' if guard else 'off'}. Flips up are of the held-out prompts a small "
             "model got, down of those the large one got" + (", among prompts guard training never saw." if guard
                                                              else "."), "",
             "| seed | rule | thresholds | clean: quality kept / cost saved | held-out small / large | flips up | "
             "flips down | gadget prompts refused (up / down) | clean refused |", "|" + "---|" * 9]
    for r in rows:
        thresholds = ", ".join(f"{v:g}" for v in r["thresholds"].values())
        lines.append(f"| {r['seed']} | {r['rule']} | {thresholds} | {r['quality_kept']:.1%} / {r['cost_saved']:.1%} "
                     f"| {r['held_small']} / {r['held_large']} | {r[UP]:.1%} | {r[DOWN]:.1%} | "
                     f"{r[UP + '_refused']:.0%} / {r[DOWN + '_refused']:.0%} | {r['held_refused']:.0%} |")
    lines += ["", "| rule | mean flips up | mean flips down | mean quality kept | mean cost saved |", "|" + "---|" * 5]
    for rule in RULES:
        mine = [r for r in rows if r["rule"] == rule]
        lines.append(f"| {rule} | {np.mean([r[UP] for r in mine]):.1%} | {np.mean([r[DOWN] for r in mine]):.1%} | "
                     f"{np.mean([r['quality_kept'] for r in mine]):.1%} | "
                     f"{np.mean([r['cost_saved'] for r in mine]):.1%} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", default="0,1,2", help="half-table splits (comma-separated)")
    parser.add_argument("--guard", action="store_true", help="the shipped gadget guard on, action reject")
    parser.add_argument("--vocabulary", choices=("tokens", "natural"), default="tokens")
    parser.add_argument("--test-prompts", type=int, default=1000, help="held-out prompts measured (at most the half)")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be whole numbers separated by commas, not {args.seeds!r}")
    if args.test_prompts < 1:
        parser.error(f"--test-prompts must be at least 1, not {args.test_prompts}")
    policy, catalogue = load_policy(ROOT / "serve_config.yaml"), load_catalogue()
    guard = GadgetGuard.load(policy.guard.artifact_path(), dims=catalogue.encoder.dimensions) if args.guard else None
    policy = policy.model_copy(update={"guard": policy.guard.model_copy(update={"enabled": args.guard,
                                                                                "action": "reject"})})
    shipped = AdequacyClassifier.load(policy.classifier_path()).family
    table = load_outcomes(ROOT / "data/outcomes/default.csv", catalogue.names())
    encoder = Encoder(threads=2)
    features, tokens = table_features(table, encoder)
    tokens = np.asarray(tokens)
    flags = guard.flags(features[:, :-1]) if guard is not None else np.zeros(len(table.prompts), bool)
    rows = []
    for seed in seeds:
        train, test = split_by_prompt(table, 0.5, seed)
        clf = fit_table(table, features, train, make_family(shipped.name, shipped.params))
        oof = out_of_fold(table, features, train, shipped.name, shipped.params, 5, seed)
        train_tasks = [clf.tasks[i] for i in clf.predict_tasks(features[train]).argmax(axis=1)]
        rng = np.random.default_rng(seed)
        train_prompts = list(dict.fromkeys(table.prompts[i] for i in train))
        test_prompts = [t for t in dict.fromkeys(table.prompts[i] for i in test) if guard is None or held_out(t)]
        search = [train_prompts[i] for i in rng.permutation(len(train_prompts))[:16]]
        held = [test_prompts[i] for i in rng.permutation(len(test_prompts))[:args.test_prompts]]
        vocabulary = token_vocabulary(encoder) if args.vocabulary == "tokens" else natural_vocabulary(train_prompts)
        for rule in RULES:
            ruled = policy.model_copy(update={"threshold_on": rule})
            thresholds = calibrate_rule(table, tokens, ruled, oof, train, train_tasks, 0.95, 0.05).thresholds
            ruled = ruled.with_thresholds(thresholds)
            row = {"seed": seed, "rule": rule, "thresholds": thresholds,
                   **outcome(table, features, tokens, test, clf, ruled, catalogue, flags[test])}
            row.update(attack_rule(WhiteBoxView(clf, ruled, catalogue, encoder, guard), search, held, vocabulary))
            rows.append(row)
            print(json.dumps(row), flush=True)
    stem = "threshold_on_attack" + ("_guard" if args.guard else "") + ("_natural" if args.vocabulary == "natural"
                                                                        else "")
    command = ("bench/threshold_on_attack.py --out bench" + (" --guard" if args.guard else "")
               + (" --vocabulary natural" if args.vocabulary == "natural" else ""))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({"rows": rows, "guard": args.guard,
                                                   "vocabulary": args.vocabulary}, indent=1))
    text = render(rows, args.guard, args.vocabulary, shipped.label(), command)
    (out / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
