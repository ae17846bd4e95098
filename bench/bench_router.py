"""Benchmarks for README.md (loopback only, bounded in count and time).

  make bench            # or: .venv/bin/python bench/bench_router.py [--requests N]

Measures: the in-process routing decision (encoder + classifier + policy), /v1/route through Ray Serve,
cold start until /healthz answers, the resident memory of the whole ensemble, and each model's tokens/s.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import httpx

PROMPTS = ["Hi! How are you today?", "Write a Python function that merges two sorted lists.",
           "A shop sells pens at $2 and notebooks at $5. Ann buys 3 pens and 2 notebooks. How much does she pay?",
           "Thanks for the help, see you tomorrow!", "Implement binary search in Python and explain it."]


def percentiles(samples_ms: list[float]) -> dict:
    ordered = sorted(samples_ms)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": round(statistics.median(ordered), 3), "p99_ms": round(pick(0.99), 3), "n": len(ordered)}


def bench_in_process(n: int) -> dict:
    from router.decision import decide
    from router.policy import load_policy
    from router.service import RoutingService

    service = RoutingService()
    service.apply_policy(load_policy().model_dump(mode="json"))
    for p in PROMPTS:  # warm-up
        service.route(p, 20)
    full, pure = [], []
    live = service.live
    prediction = live.classifier.predict_one(service.features(PROMPTS[1])[0])
    for i in range(n):
        t = time.perf_counter()
        service.route(PROMPTS[i % len(PROMPTS)], 20)
        full.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        decide(prediction.scores, prediction.task, 20, live.policy, service.catalogue)
        pure.append((time.perf_counter() - t) * 1000)
    return {"route_in_process": percentiles(full), "decide_pure": percentiles(pure)}


def memory_of_ray() -> dict:
    """RSS and PSS (shared pages split between processes) summed over every Ray process of this cluster."""
    rss = pss = count = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "ray" not in cmd or "bench_router" in cmd:
                continue
            for line in (proc / "smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
            count += 1
        except (OSError, ValueError):
            continue
    return {"processes": count, "rss_gib": round(rss / 1024**2, 2), "pss_gib": round(pss / 1024**2, 2)}


def bench_serve(n: int) -> dict:
    from router.local_ensemble import local_ensemble

    with local_ensemble() as ens:
        result = {"cold_start_s": round(ens.ready_after_s, 1)}
        with httpx.Client(timeout=300) as http:
            body = lambda p, **kw: {"model": "auto", "messages": [{"role": "user", "content": p}], **kw}  # noqa: E731
            for p in PROMPTS:
                http.post(f"{ens.base}/v1/route", json=body(p))
            samples = []
            for i in range(n):
                t = time.perf_counter()
                http.post(f"{ens.base}/v1/route", json=body(PROMPTS[i % len(PROMPTS)])).raise_for_status()
                samples.append((time.perf_counter() - t) * 1000)
            result["route_via_serve"] = percentiles(samples)
            result["memory"] = memory_of_ray()
            speeds = {}
            for model in ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"):
                runs = []
                for _ in range(3):
                    t = time.perf_counter()
                    reply = http.post(f"{ens.base}/v1/chat/completions", json=body(
                        "Write a long story about a robot who learns to paint.", model=model, max_tokens=128,
                        temperature=0)).json()
                    runs.append(reply["usage"]["completion_tokens"] / (time.perf_counter() - t))
                speeds[model] = round(statistics.median(runs), 1)
            result["tokens_per_s_end_to_end"] = speeds
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--out", default="bench/results.json")
    args = parser.parse_args()
    results = {"machine": "2 CPU cores, no GPU", "in_process": bench_in_process(args.requests),
               "serve": bench_serve(args.requests)}
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
