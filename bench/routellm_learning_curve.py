"""How APGR grows with training data, on a fixed test set: is the protocol's training cap what holds the router
back, or its features? An analysis beside issue 4's protocol, not part of it (it trains past the caps).

  make routellm-learning-curve OUT=DIR   # or: .venv/bin/python bench/routellm_learning_curve.py --out DIR

Per benchmark and seed, a seeded permutation of the unique prompts gives a fixed test set (its first
--test-size prompts) and nested training sets (the next n prompts, n in --sizes; "all" = every other prompt).
Two MMLU rows are not routers (a router sees only the prompt, not its subject): "true-subject prior" scores a
test prompt by its subject's smoothed mean gain over the training prompts; "subject oracle" by its subject's mean
gain on the test set itself, an optimistic ceiling for anything that knows no more than the subject.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from routellm_benchmark import (CHOSEN, MAX_TRAIN, STRONG, WEAK, assert_disjoint, evaluate, load_all,  # noqa: E402
                                seed_list)
from routellm_variants import VARIANTS, TrainSet, smoothed_domain_gain  # noqa: E402
from router.features import Encoder  # noqa: E402
from tqdm import tqdm  # noqa: E402

PLAN = {  # benchmark: (test size, training sizes, variants)
    "mmlu": (3000, "750,1500,3000,6000,all", [CHOSEN, "domain-prior", "knn64-gain", "lr-gain"]),
    "gsm8k": (300, "150,300,600,all", [CHOSEN, "blend(knn64,hand,answer-length)", "knn64-gain", "lr-gain"]),
}
SUBJECT_ORACLE = "subject oracle (subject given, test labels: a ceiling, not a router)"
SUBJECT_PRIOR = "true-subject prior (subject given, training labels: not a router)"


def nested_splits(prompts, test_size: int, sizes: list[int | None], seed: int) -> tuple[np.ndarray, dict]:
    """Row indices of one fixed test set, and of nested training sets of each size (None = all the rest)."""
    prompts = pd.Series(prompts)
    unique = np.asarray(prompts.unique(), dtype=object)
    unique = unique[np.random.default_rng(seed).permutation(len(unique))]
    if test_size >= len(unique):
        raise ValueError(f"test size {test_size} leaves no training prompt ({len(unique)} unique prompts)")
    test = np.flatnonzero(prompts.isin(set(unique[:test_size])).to_numpy())
    rest = unique[test_size:]
    train = {}
    for n in sizes:
        if n is not None and n > len(rest):
            raise ValueError(f"training size {n} exceeds the {len(rest)} prompts outside the test set")
        train[len(rest) if n is None else n] = np.flatnonzero(prompts.isin(set(rest[:n])).to_numpy())
    return test, train


def subject_prior(train_subject, train_gain, test_subject, smoothing: float = 10.0) -> np.ndarray:
    """Each test prompt's subject's mean training gain, shrunk towards the overall mean (as domain_prior does)."""
    train_gain, train_subject = np.asarray(train_gain, dtype=float), np.asarray(train_subject)
    subjects = np.unique(train_subject)
    prior = dict(zip(subjects, smoothed_domain_gain(train_gain, train_subject, subjects, smoothing)))
    return np.array([prior.get(s, float(np.mean(train_gain))) for s in test_subject], dtype=float)


def run(data: dict, bench: str, test_size: int, sizes: list[int | None], variants: list[str], seeds) -> list[dict]:
    frame, x = data[bench]
    col = lambda c, idx: frame[c].to_numpy()[idx]  # noqa: E731
    rows = []
    for seed in seeds:
        test, trains = nested_splits(frame["prompt"], test_size, sizes, seed)
        weak, strong = col(WEAK, test).astype(float), col(STRONG, test).astype(float)
        if bench == "mmlu":
            rows.append({"benchmark": bench, "seed": seed, "router": SUBJECT_ORACLE, "train": 0,
                         **evaluate(subject_prior(col("subject", test), strong - weak, col("subject", test), 0.0),
                                    weak, strong)})
        for n, tr in tqdm(trains.items(), desc=f"{bench} seed {seed}", unit="size"):
            assert_disjoint(col("prompt", tr), col("prompt", test))
            t = TrainSet(x=x[tr], prompts=col("prompt", tr), weak=col(WEAK, tr).astype(float),
                         strong=col(STRONG, tr).astype(float), domain=col("subject", tr),
                         answer_length=col("answer_length", tr).astype(float))
            if bench == "mmlu":
                prior = subject_prior(col("subject", tr), t.gain, col("subject", test))
                rows.append({"benchmark": bench, "seed": seed, "router": SUBJECT_PRIOR, "train": n,
                             **evaluate(prior, weak, strong)})
            for name in variants:
                score = VARIANTS[name](t)(x[test], col("prompt", test))
                rows.append({"benchmark": bench, "seed": seed, "router": name, "train": n,
                             **evaluate(score, weak, strong)})
    return rows


def table(df: pd.DataFrame) -> list[str]:
    lines = []
    for bench, part in df.groupby("benchmark", sort=False):
        sizes = sorted(s for s in part["train"].unique() if s)
        head = " | ".join(f"{s:,} train{' (protocol cap)' if s == MAX_TRAIN[bench] else ''}" for s in sizes)
        lines += ["", f"**{bench}** (fixed test set of {part['test'].iloc[0]:,} unique prompts; APGR, RouteLLM "
                  "code, mean ± sd over seeds)", "", f"| router | {head} |", "|---|" + "---|" * len(sizes)]
        for router, r in part.groupby("router", sort=False):
            cells = []
            for s in sizes:
                v = r[(r["train"] == s) | (r["train"] == 0)]["apgr"]
                cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}")
            lines.append(f"| {router} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench/routellm")
    parser.add_argument("--seeds", type=seed_list, default=[0, 1, 2])
    parser.add_argument("--benchmarks", default="mmlu,gsm8k")
    args = parser.parse_args(argv)
    seeds = args.seeds
    benches = args.benchmarks.split(",")
    if unknown := [b for b in benches if b not in PLAN]:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(PLAN)}")
    data = load_all(Encoder(threads=2))
    rows = []
    for bench in benches:
        test_size, sizes, variants = PLAN[bench]
        parsed = [None if s == "all" else int(s) for s in sizes.split(",")]
        rows += [{**r, "test": test_size} for r in run(data, bench, test_size, parsed, variants, seeds)]
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["APGR against the number of training prompts (`bench/routellm_learning_curve.py`). The training sets are",
             "nested and the test set is fixed per seed, so a column-to-column change is the data's effect alone."]
    lines += table(df)
    (out / "learning_curve.md").write_text("\n".join(lines) + "\n")
    (out / "learning_curve.json").write_text(json.dumps({"per_seed": df.to_dict("records"), "doc": __doc__}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
