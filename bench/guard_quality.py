"""What the gadget guard costs clean traffic: the default router's quality and savings on the default table with
the guard off and on, against their seed-to-seed spread (issue 14: they may move by no more than that).

    .venv/bin/python bench/guard_quality.py --out bench   # about 30 s; writes guard_quality.md and .json

Per seed, the table is split in half by prompt (as `router report` does); the shipped family is fitted on one
half and decides the other with router.decision.decide under serve_config.yaml's policy, the guard's flags
passed in as the serving path passes them. A prompt the guard refuses (action `reject`) gets no answer: quality 0
and cost 0. `fallback` sends it to the large model.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.catalogue import load_catalogue  # noqa: E402
from router.classifier import AdequacyClassifier  # noqa: E402
from router.decision import SUSPECTED_GADGET, decide  # noqa: E402
from router.features import Encoder  # noqa: E402
from router.guard import GadgetGuard  # noqa: E402
from router.offline.outcomes import load_outcomes  # noqa: E402
from router.offline.train import fit_table, split_by_prompt, table_features  # noqa: E402
from router.policy import load_policy  # noqa: E402

ACTIONS = ("off", "reject", "fallback")


def outcome(table, features, tokens, test, clf, policy, catalogue, flags) -> dict:
    models, scores, costs = table.models, table.scores(), table.costs()
    probs = clf.predict_proba(features[test], [table.prompts[i] for i in test])
    tasks = [clf.tasks[k] for k in clf.predict_tasks(features[test]).argmax(axis=1)]
    distances = clf.ood_distances(features[test])
    quality = cost = 0.0
    refused = 0
    for n, i in enumerate(test):
        decision = decide(dict(zip(models, map(float, probs[n]))), tasks[n], int(tokens[i]), policy, catalogue,
                          None if distances is None else float(distances[n]),
                          clf.ood_threshold_at(policy.ood.quantile), bool(flags[n]))
        if decision.model is None and decision.rule == SUSPECTED_GADGET:
            refused += 1
            continue
        j = models.index(decision.model or policy.fallback)
        quality, cost = quality + scores[i, j], cost + costs[i, j]
    large_q, large_c = scores[test, -1].sum(), costs[test, -1].sum()
    return {"quality_kept": float(quality / large_q), "cost_saved": float(1 - cost / large_c),
            "refused": refused, "flagged": int(flags.sum()), "rows": len(test)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be whole numbers separated by commas, not {args.seeds!r}")
    policy, catalogue = load_policy(ROOT / "serve_config.yaml"), load_catalogue()
    shipped = AdequacyClassifier.load(policy.classifier_path())
    guard = GadgetGuard.load(policy.guard.artifact_path(), dims=catalogue.encoder.dimensions)
    table = load_outcomes(ROOT / "data/outcomes/default.csv", catalogue.names())
    features, tokens = table_features(table, Encoder(threads=2))
    flags_all = guard.flags(features[:, :-1])  # the embedding part, as router/service.py passes it
    rows = []
    for seed in seeds:
        train, test = split_by_prompt(table, 0.5, seed)
        clf = fit_table(table, features, train, type(shipped.family)(**shipped.family.params))
        for action in ACTIONS:
            guarded = policy.model_copy(update={"guard": policy.guard.model_copy(
                update={"enabled": action != "off", "action": "reject" if action == "off" else action})})
            rows.append({"seed": seed, "guard": action,
                         **outcome(table, features, tokens, test, clf, guarded, catalogue, flags_all[test])})
    lines = ["# The gadget guard on clean traffic (`.venv/bin/python bench/guard_quality.py --out bench`)", "",
             f"Default table, half held out per seed, family {shipped.family.label()}, serve_config.yaml's policy.", "",
             "| guard | quality kept (per seed) | cost saved (per seed) | prompts flagged |", "|---|---|---|---|"]
    for action in ACTIONS:
        mine = [r for r in rows if r["guard"] == action]
        lines.append(f"| {action} | " + ", ".join(f"{r['quality_kept']:.1%}" for r in mine) + " | "
                     + ", ".join(f"{r['cost_saved']:.1%}" for r in mine) + " | "
                     + ", ".join(f"{r['flagged']}/{r['rows']}" for r in mine) + " |")
    off = [r for r in rows if r["guard"] == "off"]
    spread = {k: float(np.ptp([r[k] for r in off])) for k in ("quality_kept", "cost_saved")}
    lines += ["", f"Seed-to-seed spread with the guard off: quality kept {spread['quality_kept']:.1%}, "
              f"cost saved {spread['cost_saved']:.1%}."]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "guard_quality.json").write_text(json.dumps({"rows": rows, "spread_guard_off": spread}, indent=1))
    (out / "guard_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
