"""RouteLLM's public benchmarks under a fixed protocol (issue 4), with several lightweight router variants.

  make routellm-benchmark OUT=DIR      # or: .venv/bin/python bench/routellm_benchmark.py --out DIR

Protocol: decontaminated as RouteLLM does; MMLU trains on at most 1,500 unique prompts and tests on all the
others; GSM8K trains on at most 300; MT-Bench is never trained on (the router learns from that seed's MMLU and
GSM8K training prompts) and routes on the first turn, scored with the GPT-4 judge's scores, both turns averaged
as RouteLLM's MTBench.evaluate does. Splits are by unique prompt text; 3 seeds, mean and spread reported.
For each benchmark and seed it writes DIR/<benchmark>-seed<k>-train.csv (prompt) and -test.csv (prompt, score;
higher means send to the strong model), so anyone can recompute the metrics from these files and the public data.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router import metrics as M  # noqa: E402
from router.classifier import feature_matrix  # noqa: E402
from router.datasets import DATA, load_routellm  # noqa: E402
from router.features import Encoder  # noqa: E402
from router.train import embed  # noqa: E402

SEEDS = (0, 1, 2)
MAX_TRAIN = {"mmlu": 1500, "gsm8k": 300}
WEAK, STRONG = "mixtral-8x7b", "gpt-4-1106"


def load_mt_bench() -> pd.DataFrame:
    folder = DATA / "mt_bench"
    questions = pd.read_json(folder / "question.jsonl", lines=True)
    judgements = pd.read_json(folder / "judgements.jsonl", lines=True)
    contaminated = set(pd.read_json(folder / "contaminated_prompts.jsonl", lines=True)["eval_prompt"])
    questions = questions[~questions["turns"].apply(lambda t: t[0] in contaminated or t[1] in contaminated)]
    means = judgements.groupby(["question_id", "model"])["score"].mean().unstack()
    out = pd.DataFrame({"question_id": questions["question_id"], "prompt": questions["turns"].apply(lambda t: t[0])})
    out[WEAK] = out["question_id"].map(means["mistralai/Mixtral-8x7B-Instruct-v0.1"])
    out[STRONG] = out["question_id"].map(means["gpt-4-1106-preview"])
    return out.reset_index(drop=True)


def split(frame: pd.DataFrame, max_train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    unique = np.asarray(frame["prompt"].unique(), dtype=object)
    unique = unique[np.random.default_rng(seed).permutation(len(unique))]
    train = set(unique[:max_train])
    is_train = frame["prompt"].isin(train).to_numpy()
    return np.flatnonzero(is_train), np.flatnonzero(~is_train)


# --- router variants: (train features, weak quality, strong quality, test features) -> strong score -----------
def lr_adequacy(xtr, weak, strong, xte, c=1.0):
    from sklearn.linear_model import LogisticRegression
    return 1.0 - LogisticRegression(C=c, max_iter=2000).fit(xtr, weak > 0.5).predict_proba(xte)[:, 1]


def lr_gain(xtr, weak, strong, xte, c=1.0):
    """P(the strong model gets right what the weak one gets wrong) - P(the reverse)."""
    from sklearn.linear_model import LogisticRegression
    gain = np.sign(strong - weak).astype(int)
    lr = LogisticRegression(C=c, max_iter=2000).fit(xtr, gain)
    p = lr.predict_proba(xte)
    classes = list(lr.classes_)
    col = lambda k: p[:, classes.index(k)] if k in classes else 0.0  # noqa: E731
    return col(1) - col(-1)


def knn(xtr, weak, strong, xte, k=32):
    sims = xte[:, :-1] @ xtr[:, :-1].T  # cosine: the embeddings are unit vectors
    idx = np.argpartition(-sims, kth=min(k, sims.shape[1] - 1), axis=1)[:, :k]
    return (strong - weak)[idx].mean(axis=1)


def blend(xtr, weak, strong, xte):
    from scipy.stats import rankdata
    return rankdata(lr_gain(xtr, weak, strong, xte)) + rankdata(knn(xtr, weak, strong, xte))


def blend3(xtr, weak, strong, xte):
    from scipy.stats import rankdata
    return (rankdata(lr_gain(xtr, weak, strong, xte)) + rankdata(knn(xtr, weak, strong, xte, k=64))
            + rankdata(lr_adequacy(xtr, weak, strong, xte)))


VARIANTS = {"lr-adequacy": lr_adequacy, "lr-gain": lr_gain, "lr-gain C=0.3": lambda *a: lr_gain(*a, c=0.3),
            "lr-gain C=3": lambda *a: lr_gain(*a, c=3.0), "knn32-gain": knn,
            "knn64-gain": lambda *a: knn(*a, k=64), "knn128-gain": lambda *a: knn(*a, k=128),
            "blend(lr-gain,knn32)": blend, "blend3(lr-gain,knn64,lr-adequacy)": blend3}


def evaluate(score, weak, strong) -> dict:
    scale = 1.0
    points = M.routellm_operating_points(score, weak, strong, scale=scale)
    wq, sq = float(np.mean(weak)), float(np.mean(strong))
    return {"apgr": M.routellm_apgr(points, wq, sq), "apgr_paper": M.paper_apgr(points, wq, sq),
            "cpt50": M.routellm_cpt(points, 0.5, wq, sq), "cpt80": M.routellm_cpt(points, 0.8, wq, sq)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench/routellm")
    parser.add_argument("--router", default="blend(lr-gain,knn32)", choices=list(VARIANTS))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    encoder = Encoder(threads=2)
    data = {}
    for name in ("mmlu", "gsm8k"):
        table = load_routellm(name)
        vectors, tokens = embed(table.prompts, encoder, desc=f"embed {name}")
        data[name] = (table.frame[["prompt"]].assign(**{WEAK: table.frame[WEAK], STRONG: table.frame[STRONG]}),
                      feature_matrix(vectors, tokens))
    mt = load_mt_bench()
    vectors, tokens = embed(mt["prompt"].tolist(), encoder, desc="embed mt_bench")
    data["mt_bench"] = (mt, feature_matrix(vectors, tokens))

    results = []
    for seed in SEEDS:
        splits = {name: split(data[name][0], MAX_TRAIN[name], seed) for name in ("mmlu", "gsm8k")}
        for bench in ("mmlu", "gsm8k", "mt_bench"):
            frame, x = data[bench]
            if bench == "mt_bench":  # never trained on: learn from this seed's MMLU and GSM8K training prompts
                xtr = np.vstack([data[n][1][splits[n][0]] for n in ("mmlu", "gsm8k")])
                wtr = np.concatenate([data[n][0][WEAK].to_numpy()[splits[n][0]] for n in ("mmlu", "gsm8k")])
                str_ = np.concatenate([data[n][0][STRONG].to_numpy()[splits[n][0]] for n in ("mmlu", "gsm8k")])
                train_prompts = pd.concat([data[n][0]["prompt"].iloc[splits[n][0]] for n in ("mmlu", "gsm8k")])
                test = np.arange(len(frame))
            else:
                tr, test = splits[bench]
                xtr, wtr, str_ = x[tr], frame[WEAK].to_numpy()[tr], frame[STRONG].to_numpy()[tr]
                train_prompts = frame["prompt"].iloc[tr]
            weak, strong = frame[WEAK].to_numpy()[test], frame[STRONG].to_numpy()[test]
            rng = np.random.default_rng(seed)
            results.append({"benchmark": bench, "seed": seed, "router": "random",
                            **evaluate(rng.random(len(test)), weak, strong)})
            for vname, fn in VARIANTS.items():
                score = fn(xtr, wtr, str_, x[test])
                results.append({"benchmark": bench, "seed": seed, "router": vname, **evaluate(score, weak, strong)})
                if vname == args.router:
                    pd.DataFrame({"prompt": train_prompts}).to_csv(out / f"{bench}-seed{seed}-train.csv", index=False)
                    pd.DataFrame({"prompt": frame["prompt"].to_numpy()[test], "score": score}).to_csv(
                        out / f"{bench}-seed{seed}-test.csv", index=False)
    df = pd.DataFrame(results)
    summary = df.groupby(["benchmark", "router"]).agg(
        apgr=("apgr", "mean"), apgr_sd=("apgr", "std"), apgr_paper=("apgr_paper", "mean"),
        cpt50=("cpt50", "mean"), cpt50_sd=("cpt50", "std"), cpt80=("cpt80", "mean")).reset_index()
    (out / "results.json").write_text(json.dumps({"per_seed": results, "protocol": __doc__}, indent=1))
    lines = ["| benchmark | router | APGR (RouteLLM code) | APGR (paper) | CPT(50%) | CPT(80%) |", "|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        lines.append(f"| {r.benchmark} | {r.router} | {r.apgr:.3f} ± {r.apgr_sd:.3f} | {r.apgr_paper:.3f} | "
                     f"{r.cpt50:.1f}% ± {r.cpt50_sd:.1f} | {r.cpt80:.1f}% |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
