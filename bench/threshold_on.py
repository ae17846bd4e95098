"""What the policy's `threshold_on` buys on the default ensemble, held out: each small model's threshold held to
its P(adequate) (`adequacy`, as shipped) or to its standing against the fallback (`advantage`), the rule the
report's sweep and the RouteLLM benchmark rank by.

    .venv/bin/python bench/threshold_on.py --out bench     # writes threshold_on.md and .json

Per seed, a seeded permutation of the default table's unique prompts gives a test set (--test-size prompts) and
a training set (the rest). The shipped family (data/router/default.json's) is fitted on the training rows, and
thresholds are calibrated as `router calibrate --keep-quality 0.95` does (5-fold out-of-fold predictions on the
training rows, each row decided by router.decision.decide under serve_config.yaml's policy with that rule),
then applied to the test rows. `auto` takes, per seed, the rule whose calibration is cheaper on the training
rows, as `router calibrate --threshold-on auto` does. Thresholds are searched on a grid of --step.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from default_learning_curve import nested  # noqa: E402
from models.catalogue import load_catalogue  # noqa: E402
from router.classifier import AdequacyClassifier  # noqa: E402
from router.families import make_family  # noqa: E402
from router.features import Encoder  # noqa: E402
from router.offline.calibrate import search, threshold_grid  # noqa: E402
from router.offline.decisions import decide_rows  # noqa: E402
from router.offline.outcomes import load_outcomes  # noqa: E402
from router.offline.select import out_of_fold  # noqa: E402
from router.offline.train import fit_table, table_features  # noqa: E402
from router.policy import load_policy  # noqa: E402

RULES = ("adequacy", "advantage")


def outcome(chosen: np.ndarray, scores: np.ndarray, costs: np.ndarray) -> dict:
    rows = np.arange(len(scores))
    return {"cost_share": float(costs[rows, chosen].sum() / costs[:, -1].sum()),
            "quality_kept": float(scores[rows, chosen].mean() / scores[:, -1].mean()),
            "large_share": float((chosen == scores.shape[1] - 1).mean())}


def calibrate_rule(table, tokens, policy, oof: np.ndarray, train: np.ndarray, train_tasks: list[str], keep: float,
                   step: float):
    """`router calibrate --keep-quality KEEP` under `policy`'s rule: the thresholds searched on the training rows'
    out-of-fold predictions, each row decided by the serving decision."""
    models, catalogue = table.models, load_catalogue()

    def chooser(t):
        return decide_rows(models, oof, train_tasks, tokens[train], policy.with_thresholds(t), catalogue)
    return search(oof, table.scores()[train], table.costs()[train], models, None, keep_quality=keep, chooser=chooser,
                  grid=threshold_grid(step))


def run(table, features, tokens, policy, family: tuple[str, dict], seeds: list[int], test_size: int,
        keep: float, step: float) -> list[dict]:
    catalogue, models = load_catalogue(), table.models
    scores, costs = table.scores(), table.costs()
    out = []
    for seed in tqdm(seeds, desc="threshold_on", unit="seed"):
        test, sizes = nested(table.prompts, test_size, [len(set(table.prompts)) - test_size], seed)
        train = next(iter(sizes.values()))
        clf = fit_table(table, features, train, make_family(*family))
        oof = out_of_fold(table, features, train, family[0], family[1], 5, seed)
        probs = clf.predict_proba(features[test], [table.prompts[i] for i in test])
        train_tasks = [clf.tasks[i] for i in clf.predict_tasks(features[train]).argmax(axis=1)]
        test_tasks = [clf.tasks[i] for i in clf.predict_tasks(features[test]).argmax(axis=1)]
        row = {"seed": seed, "train_prompts": len(train), "test_prompts": len(test)}
        for rule in RULES:
            ruled = policy.model_copy(update={"threshold_on": rule})
            cal = calibrate_rule(table, tokens, ruled, oof, train, train_tasks, keep, step)
            chosen = decide_rows(models, probs, test_tasks, tokens[test], ruled.with_thresholds(cal.thresholds), catalogue)
            row[rule] = {"thresholds": cal.thresholds, "met_on_training": cal.met_target,
                         "training_cost_share": cal.cost / cal.large_cost, **outcome(chosen, scores[test], costs[test])}

            def on_test(t, pol=ruled):
                return decide_rows(models, probs, test_tasks, tokens[test], pol.with_thresholds(t), catalogue)
            best = search(probs, scores[test], costs[test], models, None, keep_quality=keep, chooser=on_test,
                          grid=threshold_grid(step))  # chosen on the test labels: an optimistic bound
            row[rule]["best_on_test"] = {"met": best.met_target, **outcome(on_test(best.thresholds), scores[test],
                                                                           costs[test])}
        cheaper = min(RULES, key=lambda r: (not row[r]["met_on_training"], row[r]["training_cost_share"]))
        row["auto"] = {"rule": cheaper, **{k: row[cheaper][k] for k in ("cost_share", "quality_kept", "large_share")}}
        out.append(row)
    return out


def render(rows: list[dict], keep: float, step: float, family: str) -> str:
    lines = [f"# `threshold_on` on the default table, held out (family {family}, keep {keep:.0%}, grid step {step})",
             "", "Cost as a share of always-large / quality kept on each seed's test prompts; thresholds calibrated "
             "on the training rows' out-of-fold predictions.", "",
             "| rule | " + " | ".join(f"seed {r['seed']}" for r in rows) + " | mean |",
             "|---|" + "---|" * (len(rows) + 1)]
    for rule in (*RULES, "auto"):
        cells = [f"{r[rule]['cost_share']:.1%} / {r[rule]['quality_kept']:.1%}"
                 + (f" ({r[rule]['rule']})" if rule == "auto" else "") for r in rows]
        mean = (f"{np.mean([r[rule]['cost_share'] for r in rows]):.1%} / "
                f"{np.mean([r[rule]['quality_kept'] for r in rows]):.1%}")
        lines.append(f"| {rule} | " + " | ".join(cells) + f" | {mean} |")
    lines += ["", "The cheapest thresholds that keep the target on the test rows themselves (chosen on test labels: "
              "an optimistic bound for each rule, at the same quality):", "",
              "| rule | " + " | ".join(f"seed {r['seed']}" for r in rows) + " | mean |", "|---|" + "---|" * (len(rows) + 1)]
    for rule in RULES:
        cells = [f"{r[rule]['best_on_test']['cost_share']:.1%} / {r[rule]['best_on_test']['quality_kept']:.1%}"
                 for r in rows]
        mean = (f"{np.mean([r[rule]['best_on_test']['cost_share'] for r in rows]):.1%} / "
                f"{np.mean([r[rule]['best_on_test']['quality_kept'] for r in rows]):.1%}")
        lines.append(f"| {rule} | " + " | ".join(cells) + f" | {mean} |")
    lines += ["", "Thresholds per seed (training cost share):", ""]
    for r in rows:
        for rule in RULES:
            lines.append(f"- seed {r['seed']} {rule}: {r[rule]['thresholds']} "
                         f"({r[rule]['training_cost_share']:.1%} on the training rows)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for threshold_on.md and .json")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--test-size", type=int, default=188)
    parser.add_argument("--keep-quality", type=float, default=0.95)
    parser.add_argument("--step", type=float, default=0.025)
    args = parser.parse_args(argv)
    if not 0 < args.keep_quality <= 1 or not 0 < args.step < 0.5 or args.seeds < 1:
        parser.error("--keep-quality must be in (0, 1], --step in (0, 0.5) and --seeds at least 1")
    policy = load_policy(ROOT / "serve_config.yaml")
    shipped = AdequacyClassifier.load(policy.classifier_path()).family
    catalogue = load_catalogue()
    table = load_outcomes(ROOT / "data/outcomes/default.csv", catalogue.names())
    features, tokens = table_features(table, Encoder(catalogue.encoder, threads=2))
    rows = run(table, features, np.asarray(tokens), policy, (shipped.name, shipped.params), list(range(args.seeds)),
               args.test_size, args.keep_quality, args.step)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "threshold_on.json").write_text(json.dumps(rows, indent=1))
    text = render(rows, args.keep_quality, args.step, shipped.label())
    (out / "threshold_on.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
