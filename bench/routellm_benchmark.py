"""RouteLLM's public benchmarks under a fixed protocol (issue 4), with several lightweight router variants.

  make routellm-benchmark OUT=DIR      # or: .venv/bin/python bench/routellm_benchmark.py --out DIR

Protocol: decontaminated as RouteLLM does; MMLU trains on at most 1,500 unique prompts and tests on all the
others; GSM8K trains on at most 300; MT-Bench is never trained on (the router learns from that seed's MMLU and
GSM8K training prompts, plus the project's own judged table data/outcomes/default.csv, none of whose prompts is
from MT-Bench; rows marked [MMLU+GSM8K only] leave that table out) and routes on the first turn, scored with the
GPT-4 judge's scores, both turns averaged as RouteLLM's MTBench.evaluate does. The answer-length variants also
learn from the GPT-4 answers of the GSM8K training prompts (a training-only target; no test prompt's answer is
read). Splits are by unique prompt text; 3 seeds, mean and spread reported.
For each benchmark and seed it writes DIR/<benchmark>-seed<k>-train.csv (prompt) and -test.csv (prompt, score;
higher means send to the strong model), so anyone can recompute the metrics from these files and the public data.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.offline import metrics as M  # noqa: E402
from router.classifier import feature_matrix  # noqa: E402
from router.offline.datasets import DATA, load_routellm  # noqa: E402
from router.features import Encoder  # noqa: E402
from router.offline.outcomes import load_outcomes  # noqa: E402
from router.offline.train import embed  # noqa: E402
from routellm_variants import LEXICAL, VARIANTS, TrainSet  # noqa: E402
from tqdm import tqdm  # noqa: E402

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


class ProtocolError(RuntimeError):
    pass


def assert_disjoint(train_prompts, test_prompts) -> None:
    """The protocol forbids any prompt text in both train and test; refuse to score such a split."""
    overlap = set(train_prompts) & set(test_prompts)
    if overlap:
        raise ProtocolError(f"{len(overlap)} prompt(s) are in both train and test, e.g. {next(iter(overlap))[:80]!r}")


def evaluate(score, weak, strong) -> dict:
    points = M.routellm_operating_points(score, weak, strong, scale=1.0)
    wq, sq = float(np.mean(weak)), float(np.mean(strong))
    return {"apgr": M.routellm_apgr(points, wq, sq), "apgr_paper": M.paper_apgr(points, wq, sq),
            "cpt50": M.routellm_cpt(points, 0.5, wq, sq), "cpt80": M.routellm_cpt(points, 0.8, wq, sq)}


PUBLISHED = {  # RouteLLM paper v4, Tables 1-3: best router per benchmark (APGR, CPT(50%), CPT(80%))
    "mt_bench": ("matrix factorisation", 0.802, 13.40, 31.31), "mmlu": ("SW ranking", 0.603, 35.40, 71.55),
    "gsm8k": ("causal LLM (Llama-3-8B)", 0.622, 33.64, 63.26)}
CHOSEN = "blend(knn64,domain-prior,lr-adequacy)"


def load_all(encoder: Encoder, extra: str | None = None) -> dict:
    data = {}
    if extra:  # our own judged outcomes: cheapest model as weak, costliest as strong (MT-Bench training only)
        table = load_outcomes(extra)
        vectors, tokens = embed(table.prompts, encoder, desc="embed extra")
        frame = pd.DataFrame({"prompt": table.frame["prompt"], "subject": "own-" + table.frame["task"].astype(str),
                              WEAK: table.frame[table.models[0]], STRONG: table.frame[table.models[-1]]})
        data["extra"] = (frame, feature_matrix(vectors, tokens))
    for name in ("mmlu", "gsm8k"):
        table = load_routellm(name)
        vectors, tokens = embed(table.prompts, encoder, desc=f"embed {name}")
        frame = table.frame[["prompt", "subject", WEAK, STRONG]].assign(answer_length=answer_lengths(name, table))
        data[name] = (frame, feature_matrix(vectors, tokens))
    mt = load_mt_bench()
    vectors, tokens = embed(mt["prompt"].tolist(), encoder, desc="embed mt_bench")
    data["mt_bench"] = (mt.assign(subject="mt_bench"), feature_matrix(vectors, tokens))
    return data


def answer_lengths(name: str, table) -> np.ndarray:
    """log(1 + chars) of GPT-4's answer per prompt where the public data has the answers (GSM8K), else NaN."""
    if name != "gsm8k":
        return np.full(len(table.prompts), np.nan)
    raw = pd.read_csv(DATA / "gsm8k" / "gsm8k_responses.csv")
    chars = dict(zip(raw["prompt"], raw["gpt-4-1106-preview_response"].fillna("").astype(str).str.len()))
    return np.log1p(table.frame["prompt"].map(chars).to_numpy(float))


def training_set(data: dict, bench: str, splits: dict, with_extra: bool = False) -> TrainSet:
    # MT-Bench is never trained on: it learns from this seed's MMLU and GSM8K training prompts (and our own table)
    sources = ("mmlu", "gsm8k") + (("extra",) if with_extra else ()) if bench == "mt_bench" else (bench,)
    rows = {n: splits[n][0] if n in splits else np.arange(len(data[n][0])) for n in sources}
    pick = lambda col: np.concatenate([data[n][0][col].to_numpy()[rows[n]] if col in data[n][0]  # noqa: E731
                                       else np.full(len(rows[n]), np.nan) for n in sources])
    return TrainSet(x=np.vstack([data[n][1][rows[n]] for n in sources]), prompts=pick("prompt"),
                    weak=pick(WEAK).astype(float), strong=pick(STRONG).astype(float), domain=pick("subject"),
                    answer_length=pick("answer_length").astype(float))


def decision_latency_ms(encoder: Encoder, scorer, prompts, n: int, lexical: bool = False) -> tuple[float, float]:
    """p50/p99 of one routing decision: embed one prompt (unless the router reads only its text), then score it,
    as the router does per request."""
    times = []
    for prompt in prompts[:n]:
        start = time.perf_counter()
        x = None if lexical else feature_matrix(encoder.encode([prompt]), [encoder.count_tokens(prompt)])
        scorer(x, np.array([prompt], dtype=object))
        times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def seed_list(text: str) -> list[int]:
    """argparse type for --seeds: comma-separated integers."""
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 0,1,2") from None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench/routellm")
    parser.add_argument("--router", default=CHOSEN, choices=list(VARIANTS), help="the variant whose scores are written")
    parser.add_argument("--variants", default="all", help="variants to tabulate, separated by ';' (default: all)")
    parser.add_argument("--seeds", type=seed_list, default=[0, 1, 2])
    parser.add_argument("--latency-prompts", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="embed only a prompt's first N tokens (faster, coarser); default: the catalogue's 256")
    parser.add_argument("--mt-bench-extra", default=str(ROOT / "data/outcomes/default.csv"),
                        help="an outcome table whose prompts are added to MT-Bench's training set ('' for none); "
                             "its cheapest model plays the weak one, its costliest the strong one")
    parser.add_argument("--encoder", choices=("minilm", "static"), default="minilm",
                        help="the shipped MiniLM, or the static table distilled from it (bench/encoder_static.py)")
    args = parser.parse_args(argv)
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(";")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    names = list(dict.fromkeys([args.router, *names]))
    seeds = args.seeds
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    encoder = Encoder(threads=2)
    if args.max_tokens:
        encoder.max_tokens = args.max_tokens  # the embedding cache is keyed by it too
    if args.encoder == "static":
        from router.static_encoder import static_encoder

        encoder = static_encoder(encoder)
    data = load_all(encoder, args.mt_bench_extra or None)

    results, latency, timed, picked = [], {}, {}, []
    for seed in seeds:
        splits = {name: split(data[name][0], MAX_TRAIN[name], seed) for name in ("mmlu", "gsm8k")}
        runs = [("mmlu", False), ("gsm8k", False), ("mt_bench", "extra" in data)]
        if "extra" in data:
            runs.append(("mt_bench", False))  # the same variants without our own table, for comparison
        for bench, with_extra in runs:
            frame, x = data[bench]
            train = training_set(data, bench, splits, with_extra)
            test = splits[bench][1] if bench in splits else np.arange(len(frame))
            test_prompts = frame["prompt"].to_numpy()[test]
            assert_disjoint(train.prompts, test_prompts)
            weak, strong = frame[WEAK].to_numpy(float)[test], frame[STRONG].to_numpy(float)[test]
            rows = [("random", np.random.default_rng(seed).random(len(test))), ("oracle", strong - weak)]
            suffix = " [MMLU+GSM8K only]" if bench == "mt_bench" and not with_extra and "extra" in data else ""
            for name in tqdm(names, desc=f"{bench}{suffix} seed {seed}", unit="variant"):
                scorer = VARIANTS[name](train)
                score = scorer(x[test], test_prompts)
                rows.append((name + suffix, score))
                if hasattr(scorer, "chosen"):  # the family cross-validation picked on this seed's training split
                    picked.append({"benchmark": bench + suffix, "seed": seed, "variant": name,
                                   "family": scorer.chosen})
                if name == args.router and not suffix:
                    pd.DataFrame({"prompt": train.prompts}).to_csv(out / f"{bench}-seed{seed}-train.csv", index=False)
                    pd.DataFrame({"prompt": test_prompts, "score": score}).to_csv(
                        out / f"{bench}-seed{seed}-test.csv", index=False)
                    if seed == seeds[0]:
                        timed[bench] = (scorer, test_prompts)
            results += [{"benchmark": bench, "seed": seed, "router": n, **evaluate(s, weak, strong)} for n, s in rows
                        if not (suffix and n in ("random", "oracle"))]
    # one BLAS thread, as the router runs (router/service.py): OpenBLAS threads that spin after each small
    # matmul fight onnxruntime's threads for the 2 cores and slow the decision
    with threadpool_limits(1, user_api="blas"):
        for bench, (scorer, prompts) in timed.items():
            if args.latency_prompts:
                latency[bench] = decision_latency_ms(encoder, scorer, prompts, args.latency_prompts,
                                                     lexical=args.router in LEXICAL)
    write_results(out, pd.DataFrame(results), latency, args.router, picked)


def write_results(out: Path, df: pd.DataFrame, latency: dict, chosen: str, picked: list[dict] = ()) -> None:
    summary = df.groupby(["benchmark", "router"]).agg(
        apgr=("apgr", "mean"), apgr_sd=("apgr", "std"), apgr_paper=("apgr_paper", "mean"),
        cpt50=("cpt50", "mean"), cpt50_sd=("cpt50", "std"), cpt80=("cpt80", "mean")).reset_index()
    summary = summary.fillna(0.0).sort_values(["benchmark", "apgr"], ascending=[True, False])
    lines = [f"Router written to the CSVs: `{chosen}`. Mean ± sd over seeds {sorted(df.seed.unique().tolist())}. "
             "APGR (RouteLLM code): 10-quantile operating points, trapezoid AUC. APGR (paper): integrated over "
             "call budgets. CPT(x%): share of calls to the strong model to recover x% of the gap.", "",
             "| benchmark | router | APGR (RouteLLM code) | APGR (paper) | CPT(50%) | CPT(80%) |", "|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        lines.append(f"| {r.benchmark} | {r.router} | {r.apgr:.3f} ± {r.apgr_sd:.3f} | {r.apgr_paper:.3f} | "
                     f"{r.cpt50:.1f}% ± {r.cpt50_sd:.1f} | {r.cpt80:.1f}% |")
    lines += ["", "| benchmark | router | APGR | CPT(50%) | CPT(80%) | decision p50 / p99 (ms, 2 threads) |",
              "|---|---|---|---|---|---|"]
    for bench, (label, apgr, cpt50, cpt80) in PUBLISHED.items():
        lines.append(f"| {bench} | RouteLLM best: {label} (published) | {apgr:.3f} | {cpt50:.1f}% | {cpt80:.1f}% | |")
        for name in ("random", "oracle", chosen):
            r = summary[(summary.benchmark == bench) & (summary.router == name)].iloc[0]
            lat = f"{latency[bench][0]:.2f} / {latency[bench][1]:.2f}" if name == chosen and bench in latency else ""
            lines.append(f"| {bench} | {'this project: ' + name if name == chosen else name} | {r.apgr:.3f} | "
                         f"{r.cpt50:.1f}% | {r.cpt80:.1f}% | {lat} |")
    if picked:
        lines += ["", "Families picked by `router train --family auto` (cross-validation on each seed's training split):",
                  "", "| benchmark | seed | variant | family |", "|---|---|---|---|"]
        lines += [f"| {p['benchmark']} | {p['seed']} | {p.get('variant', '')} | {p['family']} |" for p in picked]
    (out / "results.json").write_text(json.dumps({"per_seed": df.to_dict("records"), "latency_ms": latency,
                                                  "router": chosen, "families_picked": list(picked),
                                                  "protocol": __doc__}, indent=1))
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
