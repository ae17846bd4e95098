"""Is a small LM's own uncertainty a routing signal on MMLU? A cascade signal, not a router under issue 4's
5 ms budget: reading one MMLU question costs a 0.5B model hundreds of milliseconds on 2 CPU cores.

  make routellm-small-lm OUT=DIR   # or: .venv/bin/python bench/routellm_small_lm_signal.py --out DIR

It asks a catalogue model (default qwen2.5-coder-0.5b, greedy, one token, top-10 logprobs) each of the first
--prompts test prompts of the benchmark's seed-0 MMLU split, and renormalises the probability of the letters
A-D. No training: the signal is 1 - max P(letter) (or the entropy over the letters). It compares that with the
benchmark's router on the same prompts, read from DIR/mmlu-seed0-test.csv (run make routellm-benchmark first).
Answers are appended to DIR/small_lm_signal-<model>.jsonl as they come, so an interrupted run resumes; the
table goes to DIR/small_lm_signal-<model>.md.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from routellm_benchmark import MAX_TRAIN, STRONG, WEAK, evaluate, split  # noqa: E402
from router.offline.datasets import load_routellm  # noqa: E402

LETTERS = ("A", "B", "C", "D")
INSTRUCTION = "Answer with the letter of the correct option only."


def letter_probs(top_logprobs: list[dict]) -> list[float]:
    """P(A..D) renormalised over the letters among the top tokens (a letter outside the top k gets 0)."""
    mass = {c: 0.0 for c in LETTERS}
    for t in top_logprobs:
        token = t["token"].strip()
        if token in mass:
            mass[token] += math.exp(t["logprob"])
    total = sum(mass.values())
    return [mass[c] / total for c in LETTERS] if total > 0 else [0.25] * 4


def uncertainty(probs) -> float:
    return 1.0 - max(probs)


def entropy(probs) -> float:
    return -sum(p * math.log(p) for p in probs if p > 0)


def ask(backend, prompt: str) -> tuple[list[float], float]:
    started = time.perf_counter()
    reply = backend.raw({
        "messages": [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": prompt}],
        "max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 10})
    content = reply["choices"][0]["logprobs"]["content"]
    return letter_probs(content[0]["top_logprobs"] if content else []), (time.perf_counter() - started) * 1000


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench/routellm")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--prompts", type=int, default=1600)
    args = parser.parse_args(argv)
    from models.catalogue import load_catalogue
    if args.model not in load_catalogue().names():
        parser.error(f"unknown model {args.model!r}; the catalogue has {load_catalogue().names()}")
    if args.prompts < 20:
        parser.error(f"--prompts {args.prompts}: need at least 20 for the 10-quantile operating points")
    out = Path(args.out)
    scores_csv = out / "mmlu-seed0-test.csv"
    if not scores_csv.exists():
        parser.error(f"{scores_csv} is missing: run make routellm-benchmark OUT={out} first")
    frame = load_routellm("mmlu").frame
    _, test = split(frame, MAX_TRAIN["mmlu"], 0)
    router_scores = pd.read_csv(scores_csv)
    if len(router_scores) != len(test) or not (router_scores["prompt"].to_numpy() == frame["prompt"].to_numpy()[test]).all():
        parser.error(f"{scores_csv} does not match the benchmark's seed-0 MMLU test split")
    rows = test[:args.prompts]

    cache = out / f"small_lm_signal-{args.model}.jsonl"
    done = {r["row"]: r for r in map(json.loads, cache.open())} if cache.exists() else {}
    todo = [int(r) for r in rows if int(r) not in done]
    if todo:
        from models.llamacpp import LlamaCppBackend  # the serving backend: sha256-checked weights, 2 threads
        backend = LlamaCppBackend(load_catalogue().model(args.model), n_parallel=1)
        with cache.open("a") as sink:
            for row in tqdm(todo, desc=f"{args.model} on MMLU", unit="prompt"):
                probs, ms = ask(backend, frame["prompt"].iloc[row])
                done[row] = {"row": row, "probs": probs, "ms": ms}
                sink.write(json.dumps(done[row]) + "\n")
                sink.flush()

    probs = [done[int(r)]["probs"] for r in rows]
    weak, strong = frame[WEAK].to_numpy(float)[rows], frame[STRONG].to_numpy(float)[rows]
    router = router_scores["score"].to_numpy(float)[:len(rows)]
    lm = np.array([uncertainty(p) for p in probs])
    rank = lambda s: pd.Series(s).rank(pct=True).to_numpy()  # noqa: E731
    signals = {
        "benchmark's router (blend(knn64,domain-prior,lr-adequacy))": router,
        f"{args.model}: 1 - max P(letter)": lm,
        f"{args.model}: entropy over the letters": np.array([entropy(p) for p in probs]),
        "router + small-LM uncertainty, rank sum over these prompts": rank(router) + rank(lm),
        "random": np.random.default_rng(0).random(len(rows)),
        "oracle": strong - weak,
    }
    latency = np.array([done[int(r)]["ms"] for r in rows])
    lines = [f"Small-LM uncertainty as a routing signal: the first {len(rows)} prompts of the seed-0 MMLU test split "
             f"(`bench/routellm_small_lm_signal.py --model {args.model}`). APGR as RouteLLM's code computes it.",
             f"The model read each prompt in {np.percentile(latency, 50):.0f} ms p50 ({np.percentile(latency, 99):.0f} "
             "ms p99) on 2 threads: a cascade signal, far over the 5 ms routing budget.", "",
             "| signal | APGR | CPT(50%) | CPT(80%) |", "|---|---|---|---|"]
    for name, score in signals.items():
        r = evaluate(score, weak, strong)
        lines.append(f"| {name} | {r['apgr']:.3f} | {r['cpt50']:.1f}% | {r['cpt80']:.1f}% |")
    (out / f"small_lm_signal-{args.model}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
