"""Would a different gadget guard close issue 14's gap? An ablation on the guard's training data, against the
gadgets that the black-box searches found with the shipped guard on (bench/attack/*.json).

    .venv/bin/python bench/guard_ablation.py --out bench   # 2.5 min with a cold embedding cache; writes guard_ablation.md

Every detector is fitted on the same rows as `router guard train` builds them (clean prompts against the same
prompts behind the shipped guard's gadgets, mutated, and behind random word runs; router/offline/guard_train.py),
thresholded at 1% of validation clean prompts, and scored on the held-out quarter of the labelled prompts, clean
and behind each black-box gadget. Detectors: the shipped LR on the MiniLM embedding, an MLP on it, and "prefix
coherence" (the cosine between the embedding of the prompt and of the prompt without its first 2/4/6/10 words:
one more encoder pass each), alone and added to the embedding.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.offline.attack import prefixed  # noqa: E402
from router.offline.attack_run import _router, _table_prompts  # noqa: E402
from router.offline.guard_train import clean_prompts, held_out, mutate, random_gadget, vocabularies_for  # noqa: E402
from router.offline.train import embed  # noqa: E402

DROPS = (2, 4, 6, 10)
ATTACKS = {"black_box_defended_tokens": "10 tokenizer words", "black_box_defended_tokens_len6": "6 tokenizer words",
           "black_box_defended_tokens_len4": "4 tokenizer words", "black_box_defended_natural": "10 plain words"}


def detectors():
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    lr = lambda: LogisticRegression(C=3.0, max_iter=3000)  # noqa: E731  the shipped guard's settings
    mlp = lambda: MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3, max_iter=400,  # noqa: E731
                                early_stopping=True, random_state=0)
    every, coherence = slice(None), slice(-len(DROPS), None)
    embedding = slice(0, -len(DROPS))
    return {"LR on the embedding (shipped)": (lr, embedding), "MLP (256) on the embedding": (mlp, embedding),
            "prefix coherence alone, LR": (lr, coherence), "embedding + prefix coherence, LR": (lr, every),
            "embedding + prefix coherence, MLP (256)": (mlp, every)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    _, _, _, encoder = _router(str(ROOT / "serve_config.yaml"))
    prompts = _table_prompts(str(ROOT / "data/outcomes/default.csv"))
    vocabularies = vocabularies_for(encoder, [p for p in prompts if not held_out(p)])
    shipped = json.loads((ROOT / "data/router/guard.json").read_text())["metadata"]["gadgets"]
    gadgets, words = [g["text"] for g in shipped], [w for v in vocabularies.values() for w in v]
    rng = random.Random(0)
    train = [t for t in clean_prompts(prompts, seed=0) if not held_out(t)]
    rng.shuffle(train)
    val, fit = train[:len(train) // 5], train[len(train) // 5:]

    def attacked(texts):
        return [prefixed(mutate(rng.choice(gadgets), words, rng) if rng.random() < 0.5
                         else random_gadget(rng.choice(list(vocabularies.values())), rng), [t])[0] for t in texts]

    def features(texts):
        full = embed(list(texts), encoder, desc="embed")[0]
        drops = [(full * embed([" ".join(t.split()[k:]) or t for t in texts], encoder, desc="embed")[0]).sum(1)
                 for k in DROPS]
        return np.c_[full, np.stack(drops, 1)]

    x_fit = features(list(fit) + attacked(fit))
    y_fit = np.r_[np.zeros(len(fit)), np.ones(len(fit))]
    x_val, x_val_pos = features(val), features(attacked(val))
    test = [p for p in prompts if held_out(p)]
    x_test = features(test)
    found = {}
    for stem, label in ATTACKS.items():
        for run in json.loads((ROOT / "bench/attack" / f"{stem}.json").read_text())["runs"]:
            found[f"{label}, {run['direction']}"] = features(prefixed(run["gadget"], test))
    rows = []
    for name, (make, cols) in detectors().items():
        model = make().fit(x_fit[:, cols], y_fit)
        p = lambda x: model.predict_proba(x[:, cols])[:, 1]  # noqa: E731
        threshold = max(0.5, float(np.quantile(p(x_val), 0.99)))
        rows.append({"detector": name, "validation_fpr": float((p(x_val) >= threshold).mean()),
                     "validation_tpr": float((p(x_val_pos) >= threshold).mean()),
                     "held_out_clean_flagged": float((p(x_test) >= threshold).mean()),
                     **{k: float((p(x) >= threshold).mean()) for k, x in found.items()}})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "guard_ablation.json").write_text(json.dumps(rows, indent=1))
    keys = ["validation_tpr", "held_out_clean_flagged", *found]
    md = ["# Gadget guard ablation (`.venv/bin/python bench/guard_ablation.py --out bench`)", "",
          f"Share flagged at the 1% validation false-positive threshold; held-out prompts: {len(test)}. The gadget "
          "columns are the black-box searches' gadgets (bench/attack/), prefixed to every held-out prompt.", "",
          "| detector | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    md += [f"| {r['detector']} | " + " | ".join(f"{r[k]:.0%}" for k in keys) + " |" for r in rows]
    (out / "guard_ablation.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
