"""What the answer cache saves (policy `cache`, router/serving/answer_cache.py): the tiny model's whole answer to a
greedy request the first time (a miss: routed and generated) against the same request again (a hit: routed, the
generation skipped), through Serve's proxy. Each round asks a new prompt twice, so miss and hit alternate and drift
on a shared machine hits both alike.

    .venv/bin/python bench/answer_cache.py --out bench     # about 1 minute; writes answer_cache.md and .json
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_router import OVERHEAD_PROMPT, OVERHEAD_TOKENS, percentiles  # noqa: E402

TINY = "smollm2-135m"


def answer_ms(http: httpx.Client, base: str, prompt: str) -> tuple[float, str]:
    body = {"model": TINY, "max_tokens": OVERHEAD_TOKENS, "temperature": 0,
            "messages": [{"role": "user", "content": prompt}]}
    started = time.perf_counter()
    reply = http.post(f"{base}/v1/chat/completions", json=body)
    reply.raise_for_status()
    return (time.perf_counter() - started) * 1000, reply.headers["x-router-cache"]


def measure(base: str, runs: int) -> dict:
    """`runs` rounds after two warm-ups; each asks a fresh prompt (a miss), then the same one (a hit)."""
    samples: dict[str, list[float]] = {"miss": [], "hit": []}
    with httpx.Client(timeout=300) as http:
        for i in range(runs + 2):
            prompt = f"{OVERHEAD_PROMPT} (round {i})"
            for expected in ("miss", "hit"):
                value, got = answer_ms(http, base, prompt)
                if got != expected:
                    raise RuntimeError(f"round {i}: expected a cache {expected}, got {got}")
                if i >= 2:
                    samples[expected].append(round(value, 3))
    stats = {kind: {**percentiles(values), "samples_ms": values} for kind, values in samples.items()}
    return {**stats, "ratio_p50": round(stats["hit"]["p50_ms"] / stats["miss"]["p50_ms"], 4)}


def render(r: dict) -> str:
    return "\n".join([
        "# What the answer cache saves", "",
        f"Command: `.venv/bin/python bench/answer_cache.py --out bench` ({r['machine']}; {r['runs']} rounds, each "
        f"a fresh greedy prompt asked twice, {OVERHEAD_TOKENS} tokens from {TINY}, through Serve's proxy, with the "
        "policy's `cache` on).", "",
        "| request | p50 (ms) | p99 (ms) |", "|---|---|---|",
        f"| first ask (miss: routed and generated) | {r['miss']['p50_ms']} | {r['miss']['p99_ms']} |",
        f"| same request again (hit: routed, not generated) | {r['hit']['p50_ms']} | {r['hit']['p99_ms']} |", "",
        f"A hit takes {r['ratio_p50']:.3f} of a miss's time at p50.", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for answer_cache.md and .json")
    parser.add_argument("--runs", type=int, default=20, help="rounds of a miss and a hit (default 20)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    from router.serving.local_ensemble import local_ensemble, wait_for

    with local_ensemble() as ens:
        policy = copy.deepcopy(ens.policy()["policy"])
        policy.update(version="answer-cache-bench", cache={"enabled": True, "ttl_s": 600, "max_entries": 1024})
        ens.deploy_policy(policy)
        wait_for(lambda: ens.policy()["version"] == "answer-cache-bench", 120, "the caching policy")
        result = {"machine": "2 CPU cores, no GPU", "runs": args.runs, **measure(ens.base, args.runs)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "answer_cache.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "answer_cache.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
