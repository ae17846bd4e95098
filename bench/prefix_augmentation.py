"""Issue 14: a router whose decision leans less on a prefix. Does training the shipped family on copies of its
prompts behind random word runs (each copy keeps its prompt's outcomes) make gadgets flip fewer decisions, and
what does it cost clean routing?

For each router (the shipped knn k=64 on the default table; the same family trained with `--copies` augmented
copies of every searchable prompt, at k=64 and at k scaled by the copies; and adversarially trained: those copies
plus, for each of `--adversarial-rounds` rounds, copies behind 8 gadgets searched against the router of the round
before), each fitted by the package's `router.offline.hardening.fit_hardened`, as `router train --prefix-copies C
--adversarial-rounds R` fits it:
- clean routing: out-of-fold predictions on the clean prompts (5 folds by prompt, an augmented copy always in its
  prompt's fold, 3 seeds): the sweep's area (the `router train` criterion) and RouterBench's AIQ;
  and, under serve_config.yaml's policy, quality kept and cost saved on half-table splits (as guard_quality.py);
- gadgets: the white-box greedy search of `router attack` (10 words, 24 candidates a step, 16 search prompts,
  seed 5) against that router, tokenizer words and plain words, both directions, guard off; the flips measured on
  the 100 held-out prompts `router attack` uses. Held-out prompts never get augmented copies, so a flip there
  shows what a new prompt would get.

    .venv/bin/python bench/prefix_augmentation.py --out bench    # about 45 minutes; writes prefix_augmentation.md/.json
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.catalogue import load_catalogue  # noqa: E402
from router.classifier import feature_matrix  # noqa: E402
from router.families import make_family  # noqa: E402
from router.features import Encoder  # noqa: E402
from router.offline.attack import DOWN, UP, WhiteBoxView, find_gadget, flip_rates  # noqa: E402
from router.offline.guard_train import held_out, vocabularies_for  # noqa: E402
from router.offline.hardening import augment, fit_hardened  # noqa: E402
from router.offline.outcomes import load_outcomes  # noqa: E402
from router.offline.select import out_of_fold, sweep_measures  # noqa: E402
from router.offline.train import fit_table, table_features  # noqa: E402
from router.policy import load_policy  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from guard_quality import outcome  # noqa: E402

TABLE = ROOT / "data" / "outcomes" / "default.csv"


def clean_routing(table, features, tokens, family, copies, gadgets, policy, catalogue, encoder, seeds) -> dict:
    """Out-of-fold area and AIQ (each fold trained on its own rows' copies, behind the gadgets the full run found),
    and quality kept / cost saved on half-table splits under the policy."""
    scores, costs, models, n = table.scores(), table.costs(), table.models, len(table)
    rows = np.arange(n)
    aug = augment(table, features, rows, encoder, copies, gadgets)
    measures, served = [], []
    for seed in seeds:
        probs = out_of_fold(table, features, rows, "knn", family, 5, seed, aug)
        measures.append(sweep_measures(probs, scores, costs, models))
        rng = np.random.default_rng(seed)
        test_half = np.flatnonzero(rng.permutation(n) < n // 2)
        train_half = np.setdiff1d(rows, test_half)
        half = augment(table, features, train_half, encoder, copies, gadgets)
        clf = fit_table(half.table, half.features, np.arange(len(half.table)), make_family("knn", family),
                        ood_rows=np.arange(half.clean))
        served.append(outcome(table, features, tokens, test_half, clf, policy, catalogue, np.zeros(len(test_half), bool)))
    return {"area": [m["area"] for m in measures], "aiq": [m["aiq"] for m in measures],
            "quality_kept": [s["quality_kept"] for s in served], "cost_saved": [s["cost_saved"] for s in served]}


def decision_ms(clf, encoder, prompts: list[str]) -> float:
    """p50 of the classifier's own part of a decision (the embedding excluded), one prompt at a time."""
    x = feature_matrix(encoder.encode(prompts), [encoder.count_tokens(p) for p in prompts])
    times = []
    for i, p in enumerate(prompts):
        start = time.perf_counter()
        clf.predict_one(x[i], p)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


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
             "| router | training rows | artifact | classifier p50 | area | AIQ | quality kept | cost saved | tokens up "
             "| tokens down | plain up | plain down |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["routers"].items():
        clean = r["clean"]
        flips = {(x["vocabulary"], x["direction"]): x["flipped"] for x in r["gadgets"]}
        mean = lambda xs: f"{np.mean(xs):.4f}"  # noqa: E731
        pct = lambda xs: f"{np.mean(xs):.1%} ({np.ptp(xs):.1%})"  # noqa: E731
        lines.append(f"| {name} | {r['training_rows']} | {r['artifact_mb']:.0f} MB | {r['decision_ms_p50']:.2f} ms | "
                     f"{mean(clean['area'])} | {mean(clean['aiq'])} | {pct(clean['quality_kept'])} | "
                     f"{pct(clean['cost_saved'])} | " + " | ".join(
                         f"{flips[(v, d)]:.1%}" for v in ("tokens", "natural") for d in (UP, DOWN)) + " |")
    lines += ["", "Quality kept and cost saved: mean over seeds (spread in brackets). Flips: the share of held-out "
              "decisions the gadget moves, up = small model to large, down = large to small. Classifier p50: the "
              "artifact's own part of one decision (the embedding, 3-5 ms on a short prompt, excluded), 200 prompts "
              "one at a time. Out-of-distribution keys: the clean prompts only, as `router train` fits them."]
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
    timing = random.Random(1).sample(prompts, 200)
    variants = {"shipped: knn k=64, no copies": (0, 0, 64),
                f"knn k=64, {args.copies} copies": (args.copies, 0, 64),
                f"knn k={64 * (args.copies + 1)}, {args.copies} copies": (args.copies, 0, 64 * (args.copies + 1))}
    if args.adversarial_rounds:  # what `router train --prefix-copies C --adversarial-rounds R` fits
        variants[f"knn k=64, {args.copies} copies + {args.adversarial_rounds} rounds of searched gadgets"] = (
            args.copies, args.adversarial_rounds, 64)
    result = {"copies": args.copies, "adversarial_rounds": args.adversarial_rounds, "seeds": seeds, "routers": {}}
    cache = Path(tempfile.gettempdir()) / "prefix_augmentation"  # an interrupted run resumes after its last round
    cache.mkdir(exist_ok=True)
    rows = np.arange(len(table))
    for name, (copies, rounds, k) in variants.items():
        full, aug = fit_hardened(table, features, rows, "knn", {"k": k}, policy, catalogue, encoder, copies, rounds,
                                 cache=cache / f"{copies}-{rounds}-{k}.json")
        gadgets = [g for gs in full.metadata["hardening"]["gadgets"] for g in gs]
        clean = clean_routing(table, features, tokens, {"k": k}, copies, gadgets, policy, catalogue, encoder, seeds)
        result["routers"][name] = {"k": k, "copies": copies, "rounds": rounds, "training_rows": len(aug.table),
                                   "artifact_mb": len(json.dumps(full.to_json())) / 1e6,
                                   "decision_ms_p50": decision_ms(full, encoder, timing), "clean": clean,
                                   "gadgets": gadget_flips(full, policy, catalogue, encoder, prompts, vocabularies)}
        print(name, json.dumps({k2: np.round(v, 4).tolist() for k2, v in clean.items()}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prefix_augmentation.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "prefix_augmentation.md").write_text(render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
