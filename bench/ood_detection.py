"""Out-of-distribution detection, measured as issue 12 asks: the share of prompts from a domain absent from
training that the router flags, and the share of held-out in-domain prompts it flags (the false alarms).

- Default table: each eval set (humaneval, gsm8k, small talk, ...) is left out of training in turn.
- RouteLLM's MMLU: 10 whole subjects are held out per seed; training uses at most 1,500 prompts of the rest.
The threshold is the router's own (router/classifier.py): the 0.97 quantile of the training prompts'
leave-one-out nearest-neighbour distances, unless --quantile says otherwise. The family does not matter here.
Beside the shipped detector, two density-aware ones, not shipped, on the same splits: the local outlier factor
(sklearn, k = 30, cosine; threshold the 0.97 quantile of the training prompts' own factors), and the union of the
nearest distance and that factor, each at the 0.985 quantile (so that the two false-alarm rates add up to about
the shipped one's). And two detectors built for near-by ("sibling") domains, also not shipped: the class-conditional
Mahalanobis distance with a tied covariance (Lee et al., 2018: the smallest distance to a training domain's mean),
and the relative Mahalanobis distance (Ren et al., 2021: that distance minus the distance under one Gaussian of all
training prompts), both with Ledoit-Wolf shrinkage, each at the 0.97 quantile of the training prompts' 5-fold
cross-fitted scores (in 384 dimensions a prompt's in-sample distance is far smaller than a new prompt's, as the
shipped detector's leave-one-out distances allow for).

    python bench/ood_detection.py --out bench   # writes bench/ood_detection.md and .json
    python bench/ood_detection.py --out bench --encoder static   # the static encoder: ood_detection_static.*
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.classifier import OOD_QUANTILE, nearest_distance  # noqa: E402
from router.families import make_family  # noqa: E402
from router.features import Encoder  # noqa: E402
from router.static_encoder import static_encoder  # noqa: E402
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
    density = density_flags(features[train, :-1], quantile, domains_of(table)[train])
    unseen_rows = np.flatnonzero(unseen)
    return (flagged(unseen_rows), flagged(test), len(train),
            {name: (float(flag(features[unseen_rows, :-1]).mean()), float(flag(features[test, :-1]).mean()))
             for name, flag in density.items()})


def density_flags(keys: np.ndarray, quantile: float, domains: np.ndarray, k: int = 30) -> dict:
    """Flag functions of the four detectors not shipped, fitted on the training prompts' embeddings and domains."""
    from sklearn.neighbors import LocalOutlierFactor

    unique, first = np.unique(keys, axis=0, return_index=True)  # a prompt repeated in the table is one point
    lof = LocalOutlierFactor(n_neighbors=min(k, len(unique) - 1), novelty=True, metric="cosine").fit(unique)
    factor = lambda x: -lof.score_samples(x)  # noqa: E731
    own = -lof.negative_outlier_factor_
    half = 1 - (1 - quantile) / 2  # each of the union's two tests at half the false-alarm budget
    nearest_cut = np.quantile(nearest_distance(unique, unique, leave_one_out=True), half)
    return {"lof": lambda x: factor(x) > np.quantile(own, quantile),
            "union": lambda x: (nearest_distance(x, unique) > nearest_cut) | (factor(x) > np.quantile(own, half)),
            **mahalanobis_flags(unique, domains[first], quantile)}


def mahalanobis_flags(keys: np.ndarray, domains: np.ndarray, quantile: float, folds: int = 5) -> dict:
    """Flag functions of both Mahalanobis scores, fitted on all of `keys`, each cut at the `quantile` of the
    training prompts' own scores, each scored by a fit on the other folds."""
    fold = np.random.default_rng(0).permutation(len(keys)) % folds
    own = np.empty((2, len(keys)))
    for f in range(folds):
        scorers = mahalanobis_scores(keys[fold != f], domains[fold != f])
        own[:, fold == f] = [score(keys[fold == f]) for score in scorers]
    scorers, cuts = mahalanobis_scores(keys, domains), np.quantile(own, quantile, axis=1)
    return {name: (lambda x, score=score, cut=cut: score(x) > cut)
            for name, score, cut in zip(("mahalanobis", "relative"), scorers, cuts)}


def mahalanobis_scores(keys: np.ndarray, domains: np.ndarray):
    """Score functions: the smallest Mahalanobis distance to a domain's mean under one shared covariance (Lee et
    al., 2018), and that minus the distance under a single Gaussian of all prompts (Ren et al., 2021, relative)."""
    from sklearn.covariance import LedoitWolf

    classes, label = np.unique(domains, return_inverse=True)
    means = np.stack([keys[label == c].mean(axis=0) for c in range(len(classes))])
    tied = LedoitWolf().fit(keys - means[label]).precision_
    background = LedoitWolf().fit(keys)

    def per_domain(x: np.ndarray) -> np.ndarray:  # (n, domains) squared distances
        return np.stack([np.einsum("nd,de,ne->n", x - m, tied, x - m) for m in means], axis=1)

    def whole(x: np.ndarray) -> np.ndarray:
        return background.mahalanobis(x)  # squared, under the one Gaussian

    nearest = lambda x: per_domain(x).min(axis=1)  # noqa: E731
    return nearest, (lambda x: nearest(x) - whole(x))  # min over domains of (MD_k - MD_0) = min_k MD_k - MD_0


def density_means(rates: list) -> dict:
    return {name: {"unseen_flagged": float(np.mean([r[3][name][0] for r in rates])),
                   "in_domain_flagged": float(np.mean([r[3][name][1] for r in rates]))} for name in rates[0][3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quantile", type=float, default=OOD_QUANTILE)
    parser.add_argument("--encoder", choices=("minilm", "static"), default="minilm",
                        help="the shipped MiniLM, or the static table distilled from it (router/static_encoder.py)")
    args = parser.parse_args()
    encoder = Encoder(threads=2)
    if args.encoder == "static":
        encoder = static_encoder(encoder)
    stem = "ood_detection" + ("_static" if args.encoder == "static" else "")
    results = {"quantile": args.quantile, "default": [], "mmlu": []}

    table = load_outcomes(ROOT / "data/outcomes/default.csv")
    features, _ = table_features(table, encoder)
    domains = domains_of(table)
    for domain in sorted(set(domains)):
        rates = [flag_rates(table, features, domains == domain, seed, args.quantile) for seed in range(args.seeds)]
        results["default"].append({"held_out": domain, "unseen_flagged": float(np.mean([r[0] for r in rates])),
                                   "in_domain_flagged": float(np.mean([r[1] for r in rates])),
                                   "train_rows": rates[0][2], **density_means(rates)})

    mmlu = load_routellm("mmlu")
    features, _ = table_features(mmlu, encoder)
    subjects = domains_of(mmlu)
    names = sorted(set(subjects))
    for seed in range(args.seeds):
        held = np.random.default_rng(seed).choice(names, size=10, replace=False)
        rates = flag_rates(mmlu, features, np.isin(subjects, held), seed, args.quantile, max_train=1500)
        results["mmlu"].append({"seed": seed, "held_out": sorted(held.tolist()), "unseen_flagged": rates[0],
                                "in_domain_flagged": rates[1], "train_rows": rates[2], **density_means([rates])})

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1))
    flag = " --encoder static" if args.encoder == "static" else ""
    lines = [f"# Out-of-distribution detection (threshold: the {args.quantile:g} quantile of leave-one-out "
             f"neighbour distances; `python bench/ood_detection.py{flag}`; encoder {encoder.name})", "",
             "Goal (issue 12): >= 80% of an unseen domain flagged, <= 5% of held-out in-domain prompts.", "",
             "Unseen flagged / in-domain flagged, for the shipped detector (nearest distance) and four not shipped "
             "(local outlier factor, k = 30; the union of both, each at half the false-alarm quantile; the "
             "class-conditional Mahalanobis distance, Lee et al. 2018; the relative Mahalanobis distance, Ren et al. "
             "2021).", "",
             "| data | held out | nearest (shipped) | local outlier factor | union | Mahalanobis "
             "| relative Mahalanobis | train rows |", "|---|---|---|---|---|---|---|---|"]

    def cells(r):
        return " | ".join(f"{x['unseen_flagged']:.1%} / {x['in_domain_flagged']:.1%}"
                          for x in (r, r["lof"], r["union"], r["mahalanobis"], r["relative"]))
    for r in results["default"]:
        lines.append(f"| default table | {r['held_out']} | {cells(r)} | {r['train_rows']} |")
    for r in results["mmlu"]:
        lines.append(f"| MMLU seed {r['seed']} | 10 subjects | {cells(r)} | {r['train_rows']} |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
