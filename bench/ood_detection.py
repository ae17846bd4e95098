"""Out-of-distribution detection, measured as issue 12 asks: the share of prompts from a domain absent from
training that the router flags, and the share of held-out in-domain prompts it flags (the false alarms).

- Default table: each eval set (humaneval, gsm8k, small talk, ...) is left out of training in turn.
- RouteLLM's MMLU: 10 whole subjects are held out per seed; training uses at most 1,500 prompts of the rest.
The threshold is the router's own (router/classifier.py): the 0.97 quantile of the training prompts'
leave-one-out nearest-neighbour distances, unless --quantile says otherwise. The family does not matter here.

    python bench/ood_detection.py --out bench   # writes bench/ood_detection.md and .json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.classifier import OOD_QUANTILE  # noqa: E402
from router.families import make_family  # noqa: E402
from router.features import Encoder  # noqa: E402
from router.offline.datasets import load_routellm  # noqa: E402
from router.offline.outcomes import load_outcomes  # noqa: E402
from router.offline.select import domains_of  # noqa: E402
from router.offline.train import fit_table, table_features  # noqa: E402


def flag_rates(table, features, unseen: np.ndarray, seed: int, quantile: float, max_train: int | None = None):
    """Train on 80% of the seen rows (by prompt); return (unseen flagged, held-out seen flagged)."""
    rng = np.random.default_rng(seed)
    texts = np.asarray(table.prompts, dtype=object)
    seen_prompts = np.unique(texts[~unseen])
    seen_prompts = seen_prompts[rng.permutation(len(seen_prompts))]
    cut = int(len(seen_prompts) * 0.8)
    train_prompts = set(seen_prompts[:cut][:max_train] if max_train else seen_prompts[:cut])
    test_prompts = set(seen_prompts[cut:])
    train = np.flatnonzero([t in train_prompts for t in texts])
    test = np.flatnonzero([t in test_prompts for t in texts])
    clf = fit_table(table, features, train, make_family("lr", {"c": 1.0}), ood_quantile=quantile)
    flagged = lambda rows: float((clf.ood_distances(features[rows]) > clf.ood_threshold).mean())  # noqa: E731
    return flagged(np.flatnonzero(unseen)), flagged(test), len(train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quantile", type=float, default=OOD_QUANTILE)
    args = parser.parse_args()
    encoder = Encoder(threads=2)
    results = {"quantile": args.quantile, "default": [], "mmlu": []}

    table = load_outcomes(ROOT / "data/outcomes/default.csv")
    features, _ = table_features(table, encoder)
    domains = domains_of(table)
    for domain in sorted(set(domains)):
        rates = [flag_rates(table, features, domains == domain, seed, args.quantile) for seed in range(args.seeds)]
        results["default"].append({"held_out": domain, "unseen_flagged": float(np.mean([r[0] for r in rates])),
                                   "in_domain_flagged": float(np.mean([r[1] for r in rates])),
                                   "train_rows": rates[0][2]})

    mmlu = load_routellm("mmlu")
    features, _ = table_features(mmlu, encoder)
    subjects = domains_of(mmlu)
    names = sorted(set(subjects))
    for seed in range(args.seeds):
        held = np.random.default_rng(seed).choice(names, size=10, replace=False)
        unseen, seen, n = flag_rates(mmlu, features, np.isin(subjects, held), seed, args.quantile, max_train=1500)
        results["mmlu"].append({"seed": seed, "held_out": sorted(held.tolist()), "unseen_flagged": unseen,
                                "in_domain_flagged": seen, "train_rows": n})

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ood_detection.json").write_text(json.dumps(results, indent=1))
    lines = [f"# Out-of-distribution detection (threshold: the {args.quantile:g} quantile of leave-one-out "
             f"neighbour distances; `python bench/ood_detection.py`)", "",
             "Goal (issue 12): >= 80% of an unseen domain flagged, <= 5% of held-out in-domain prompts.", "",
             "| data | held out | unseen flagged | in-domain flagged | train rows |", "|---|---|---|---|---|"]
    for r in results["default"]:
        lines.append(f"| default table | {r['held_out']} | {r['unseen_flagged']:.1%} | {r['in_domain_flagged']:.1%} | "
                     f"{r['train_rows']} |")
    for r in results["mmlu"]:
        lines.append(f"| MMLU seed {r['seed']} | 10 subjects | {r['unseen_flagged']:.1%} | "
                     f"{r['in_domain_flagged']:.1%} | {r['train_rows']} |")
    (out / "ood_detection.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
