"""MT-Bench is never trained on: would cross-validation that holds out whole sources choose a router that
transfers better? (issue 12's MT-Bench goal)

  .venv/bin/python bench/routellm_source_folds.py --out bench/routellm     # about 6 minutes on 2 cores

MT-Bench's training table (routellm_benchmark.py's protocol) joins three sources: the seed's MMLU and GSM8K
training splits and our own judged table. `router train --family auto` folds it by prompt, so every fold's test
rows come from sources the fold also trained on, unlike MT-Bench itself. Here each candidate is also scored
leaving one source out at a time (three folds), and the candidate with the largest area under that is picked.
Both picks' test APGR comes from routellm_selection_gap.py's fit of each candidate on the whole training split.
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

from routellm_benchmark import MAX_TRAIN, load_all, seed_list, split, training_set  # noqa: E402
from routellm_selection_gap import GOALS, candidates_on_test  # noqa: E402
from routellm_variants import outcome_table  # noqa: E402

from router.families import make_family  # noqa: E402
from router.features import Encoder  # noqa: E402
from router.offline.select import candidates, out_of_fold, sweep_measures  # noqa: E402


def source_held_out_areas(train, source: np.ndarray) -> dict[str, float]:
    """Each auto candidate's area under its sweep, each source's rows predicted by a fit on the other sources."""
    table, rows = outcome_table(train), np.arange(len(source))
    return {make_family(name, params).label():
            sweep_measures(out_of_fold(table, train.x, rows, name, params, int(source.max()) + 1, 0, fold=source),
                           table.scores(), table.costs(), table.models)["area"]
            for name, params in candidates("auto")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/routellm")
    parser.add_argument("--seeds", type=seed_list, default=[0, 1, 2])
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_all(Encoder(threads=2), str(ROOT / "data/outcomes/default.csv"))
    rows = []
    for seed in args.seeds:
        splits = {name: split(data[name][0], MAX_TRAIN[name], seed) for name in ("mmlu", "gsm8k")}
        train = training_set(data, "mt_bench", splits, with_extra=True)
        source = np.repeat([0, 1, 2], [len(splits["mmlu"][0]), len(splits["gsm8k"][0]), len(data["extra"][0])])
        assert len(source) == len(train.prompts), "training_set joins mmlu, gsm8k and our table in that order"
        tested = candidates_on_test(data, "mt_bench", splits, [])
        areas = source_held_out_areas(train, source)
        by_prompt = next(c for c in tested if c["picked"])
        by_source = max(tested, key=lambda c: areas[c["label"]])
        rows.append({"seed": seed, "by_prompt": by_prompt["label"], "by_prompt_apgr": by_prompt["test_apgr"],
                     "by_source": by_source["label"], "by_source_apgr": by_source["test_apgr"],
                     "areas": areas})
    lines = [f"Command: `.venv/bin/python bench/routellm_source_folds.py --out DIR` (seeds {args.seeds}). MT-Bench "
             "test APGR of the candidate that `--family auto`'s 5 prompt-grouped folds pick, against the one picked "
             "by holding out each source (MMLU, GSM8K, our table) in turn.", "",
             "| seed | folds by prompt pick | its MT-Bench APGR | folds by source pick | its MT-Bench APGR |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['by_prompt']} | {r['by_prompt_apgr']:.3f} | {r['by_source']} | "
              f"{r['by_source_apgr']:.3f} |" for r in rows]
    lines.append(f"| mean (goal {GOALS['mt_bench']:.2f}) | | {np.mean([r['by_prompt_apgr'] for r in rows]):.3f} | | "
                 f"{np.mean([r['by_source_apgr'] for r in rows]):.3f} |")
    (out / "source_folds.md").write_text("\n".join(lines) + "\n")
    (out / "source_folds.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
