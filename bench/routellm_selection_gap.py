"""How far can choosing among the shipped families go on RouteLLM's benchmarks? (issue 12's APGR goals)

  .venv/bin/python bench/routellm_selection_gap.py --out bench/routellm     # about 14 minutes on 2 cores

Under routellm_benchmark.py's protocol (same splits, seeds, training sets and APGR code), every candidate that
`router train --family auto` cross-validates (each family's grid) is also fitted on the whole training split and
scored on the test split. Per benchmark and seed it records each candidate's out-of-fold area (what selection
sees) and its test APGR (what selection is judged by), and from them:
- the test APGR of the candidate cross-validation picks (the product's choice);
- the best single candidate's test APGR, picked in hindsight on the test split: a ceiling for any rule that
  picks one of these candidates, not a router;
- Spearman's rank correlation between out-of-fold area and test APGR over the candidates.
If even the hindsight pick misses a goal, no selection rule over these families can meet it.
`--also cluster` adds families that auto leaves out to the candidates (outputs selection_gap_cluster.md/.json).
`--measured` adds the settings that families keep out of auto, `measured_grid`, today the four-member
gain-blend(knn+domain+lr+hand) (outputs selection_gap_measured.md/.json).
`--folds 10` cross-validates with 10 folds instead of `router train`'s 5 (outputs selection_gap_folds10.md/.json):
each fold's model then trains on 90% of the split, closer to the whole split that the test judges.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from routellm_benchmark import MAX_TRAIN, STRONG, WEAK, evaluate, load_all, seed_list, split, training_set  # noqa: E402
from routellm_variants import outcome_table  # noqa: E402

from router.families import make_family  # noqa: E402
from router.features import Encoder  # noqa: E402
from router.offline.report import large_advantage  # noqa: E402
from router.offline.select import candidates, select_family  # noqa: E402
from router.offline.train import fit_table  # noqa: E402

GOALS = {"mmlu": 0.65, "gsm8k": 0.62, "mt_bench": 0.76}  # issue 12, mean of 3 seeds


def candidates_on_test(data: dict, bench: str, splits: dict, also: list[str], folds: int = 5,
                       measured: bool = False) -> list[dict]:
    """Each candidate's out-of-fold area on the training split and its APGR on the test split."""
    frame, x = data[bench]
    train = training_set(data, bench, splits, with_extra=bench == "mt_bench" and "extra" in data)
    test = splits[bench][1] if bench in splits else np.arange(len(frame))
    weak, strong = frame[WEAK].to_numpy(float)[test], frame[STRONG].to_numpy(float)[test]
    table, rows = outcome_table(train), np.arange(len(train.prompts))
    selection = select_family(table, train.x, rows, "auto", folds, seed=0, also=also, measured=measured)
    prompts = list(frame["prompt"].to_numpy()[test])
    out = []
    for row in tqdm(selection.table, desc=f"{bench}: fit and test", unit="candidate", leave=False):
        clf = fit_table(table, train.x, rows, make_family(row["family"], row["params"]))
        score = large_advantage(clf.predict_proba(x[test], prompts))
        picked = (row["family"], row["params"]) == (selection.family, selection.params)
        out.append({"label": row["label"], "area": row["area"], "test_apgr": evaluate(score, weak, strong)["apgr"],
                    "picked": picked})
    return out


def summarise(per_split: dict) -> list[dict]:
    rows = []
    for (bench, seed), cands in per_split.items():
        picked = next(c for c in cands if c["picked"])
        best = max(cands, key=lambda c: c["test_apgr"])
        ranks = pd.DataFrame([(c["area"], c["test_apgr"]) for c in cands]).rank()  # Spearman: Pearson of ranks
        rho = np.corrcoef(ranks[0], ranks[1])[0, 1]
        rows.append({"benchmark": bench, "seed": seed, "picked": picked["label"], "picked_apgr": picked["test_apgr"],
                     "best": best["label"], "best_apgr": best["test_apgr"], "spearman": float(rho),
                     "candidates": len(cands)})
    return rows


def write(out: Path, per_split: dict, rows: list[dict], seeds: list[int], also: list[str], folds: int = 5,
          measured: bool = False) -> None:
    flag, stem = (f" --also {','.join(also)}", "selection_gap_" + "_".join(also)) if also else ("", "selection_gap")
    if measured:
        flag, stem = flag + " --measured", stem + "_measured"
    if folds != 5:
        flag, stem = flag + f" --folds {folds}", stem + f"_folds{folds}"
    lines = [f"Command: `.venv/bin/python bench/routellm_selection_gap.py --out DIR{flag}` (seeds {seeds}). Every "
             f"candidate of `router train --family auto`{' with ' + ', '.join(also) if also else ''}"
             f"{' and the settings measured and left out of it' if measured else ''} fitted on the "
             "training split and scored on the test split, under bench/routellm_benchmark.py's protocol, "
             f"{folds}-fold cross-validation. The hindsight pick is chosen on test results: a ceiling for picking one "
             "candidate, not a router.", "",
             "| benchmark | seed | cross-validation picked | its test APGR | best on test (hindsight) | its APGR "
             "| Spearman(out-of-fold area, test APGR) over the candidates |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['benchmark']} | {r['seed']} | {r['picked']} | {r['picked_apgr']:.3f} | {r['best']} | "
                     f"{r['best_apgr']:.3f} | {r['spearman']:.2f} ({r['candidates']}) |")
    lines += ["", "| benchmark | issue 12's goal | picked by cross-validation (mean) | hindsight pick (mean) |",
              "|---|---|---|---|"]
    for bench, goal in GOALS.items():
        mine = [r for r in rows if r["benchmark"] == bench]
        if mine:
            lines.append(f"| {bench} | {goal:.2f} | {np.mean([r['picked_apgr'] for r in mine]):.3f} | "
                         f"{np.mean([r['best_apgr'] for r in mine]):.3f} |")
    lines += ["", "Each candidate's test APGR, mean of the seeds (what no selection rule sees):", "",
              "| candidate | " + " | ".join(GOALS) + " |", "|---|" + "---|" * len(GOALS)]
    for label in dict.fromkeys(c["label"] for cands in per_split.values() for c in cands):
        means = [[c["test_apgr"] for (b, _), cands in per_split.items() if b == bench for c in cands
                  if c["label"] == label] for bench in GOALS]
        lines.append(f"| {label} | " + " | ".join(f"{np.mean(m):.3f}" if m else "" for m in means) + " |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (out / f"{stem}.json").write_text(json.dumps(
        {"summary": rows, "candidates": [{"benchmark": b, "seed": s, "rows": c} for (b, s), c in per_split.items()]},
        indent=1))
    print("\n".join(lines))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/routellm")
    parser.add_argument("--seeds", type=seed_list, default=[0, 1, 2])
    parser.add_argument("--benchmarks", default="mmlu,gsm8k,mt_bench",
                        help="comma-separated, from mmlu, gsm8k and mt_bench")
    parser.add_argument("--also", default="", help="comma-separated families that auto leaves out, added to its "
                        "candidates (for example: cluster)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (router train's default: 5)")
    parser.add_argument("--measured", action="store_true", help="also the settings families keep out of auto "
                        "(measured_grid)")
    args = parser.parse_args(argv)
    if args.folds < 2:
        parser.error(f"--folds must be at least 2, got {args.folds}")
    also = [name for name in args.also.split(",") if name]
    try:
        candidates("auto", also)
    except ValueError as err:
        parser.error(str(err))
    benches = args.benchmarks.split(",")
    unknown = [b for b in benches if b not in GOALS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(GOALS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_all(Encoder(threads=2), str(ROOT / "data/outcomes/default.csv"))
    per_split = {}
    for seed in args.seeds:
        splits = {name: split(data[name][0], MAX_TRAIN[name], seed) for name in ("mmlu", "gsm8k")}
        for bench in benches:
            per_split[(bench, seed)] = candidates_on_test(data, bench, splits, also, args.folds, args.measured)
    write(out, per_split, summarise(per_split), args.seeds, also, args.folds, args.measured)


if __name__ == "__main__":
    main()
