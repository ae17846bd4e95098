"""Why the sweep ranks by the large model's predicted advantage: on RouteLLM's MMLU and GSM8K (seeds 0 and 1,
the benchmark's protocol), each family scored as 1 - P(weak adequate) against P(strong) - P(weak).

    .venv/bin/python bench/routellm_rank_score.py     # about 3 minutes; prints one line per seed and benchmark
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np, pandas as pd
from routellm_benchmark import load_all, split, training_set, MAX_TRAIN, evaluate, WEAK, STRONG
from router.families import make_family
from router.offline.outcomes import COST, OutcomeTable
from router.offline.train import fit_table
from router.features import Encoder
data = load_all(Encoder(threads=2), None)
for seed in (0, 1):
    splits = {n: split(data[n][0], MAX_TRAIN[n], seed) for n in ("mmlu", "gsm8k")}
    for bench in ("mmlu", "gsm8k"):
        t = training_set(data, bench, splits)
        frame = pd.DataFrame({"prompt": t.prompts, "subject": t.domain.astype(str), "weak": t.weak, "strong": t.strong,
                              "weak"+COST: 0.24, "strong"+COST: 24.7})
        table = OutcomeTable(frame, ["weak", "strong"]); rows = np.arange(len(frame))
        f, x = data[bench]; test = splits[bench][1]; tp = list(f["prompt"].to_numpy()[test])
        w, s = f[WEAK].to_numpy(float)[test], f[STRONG].to_numpy(float)[test]
        out = []
        from router.families import FAMILIES
        for name, params in [("domain", {"smoothing": 10.0}), ("knn", {"k": 64}), ("lr", {"c": 1.0}),
                             ("blend", FAMILIES["blend"].grid[0])]:
            clf = fit_table(table, t.x, rows, make_family(name, params))
            p = clf.predict_proba(x[test], tp)
            out.append(f"{name}: adeq {evaluate(1-p[:,0], w, s)['apgr']:.3f} gain {evaluate(p[:,1]-p[:,0], w, s)['apgr']:.3f}")
        print(seed, bench, " | ".join(out), flush=True)
