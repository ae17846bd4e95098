"""Issue 16's route path: which of Ray Serve's settings help this app? Each variant is `router up` with its
environment, measured on `POST /v1/route` at 1 and 16 clients through the proxy or on the ingress replica's own
port (direct ingress), alternating with plain FastAPI running the same decision, in one run.

    .venv/bin/python bench/serve_flags.py --out bench    # about 8 minutes; writes serve_flags.md and .json
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_router import _load, PROMPTS, bench_plain_fastapi  # noqa: E402
from router.serving.local_ensemble import free_port, http_ok, wait_for  # noqa: E402

PROXY_ONLY = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}
# name -> (environment over `router up`'s own, where the clients call: "proxy" or "direct")
VARIANTS = {
    "direct ingress (shipped), on the replica's port": ({}, "direct"),
    "the same, through the proxy": ({}, "proxy"),
    "direct ingress off: the proxy only": (PROXY_ONLY, "proxy"),
    "RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (direct ingress, gRPC between replicas, user code on the main loop)":
        ({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}, "direct"),
    "direct ingress off; user code and router on the replica's main loop": (
        {**PROXY_ONLY, "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"},
        "proxy"),
}
DIRECT_LINE = "router: direct to the ingress replica, without the proxy hop: "


def measure(base: str, n: int) -> dict:
    import asyncio

    body = lambda i: {"model": "auto", "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}  # noqa: E731
    return {f"{c}_clients": asyncio.run(_load(f"{base}/v1/route", body, n, c)) for c in (1, 16)}


def serve_variant(env: dict, where: str, n: int, log: Path) -> dict:
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "router"), "up", "--port", str(port)],
                                env={**os.environ, **env}, stdout=out, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 300, "router up")
        base = f"http://127.0.0.1:{port}"
        if where == "direct":
            line = wait_for(lambda: next((x for x in log.read_text().splitlines() if x.startswith(DIRECT_LINE)), None),
                            60, "router up to print its direct port")
            base = line[len(DIRECT_LINE):].split()[0].removesuffix("/v1")
        measure(base, 50)  # warm-up
        return {"url": base, **measure(base, n)}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def render(r: dict) -> str:
    lines = ["# Ray Serve's settings on the route path (issue 16)", "",
             f"Command: `.venv/bin/python bench/serve_flags.py --out bench` ({r['rounds']} rounds, {r['n']} requests "
             "per measurement; each round runs every variant, then plain FastAPI with the same decision).", "",
             "| variant | p50 at 1 client, ms (per round) | req/s at 16 clients (per round) |", "|---|---|---|"]
    for name, rounds in r["results"].items():
        p50 = ", ".join(f"{x['1_clients']['p50_ms']:.1f}" for x in rounds)
        rps = ", ".join(f"{x['16_clients']['req_per_s']:.0f}" for x in rounds)
        lines.append(f"| {name} | {p50} | {rps} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for serve_flags.md and .json")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over every variant (default 2)")
    parser.add_argument("--n", type=int, default=300, help="requests per measurement (default 300)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.rounds < 1 or args.n < 20:
        parser.error("--rounds must be at least 1 and --n at least 20")
    results: dict[str, list] = {name: [] for name in [*VARIANTS, "plain FastAPI (baseline)"]}
    for _ in range(args.rounds):
        for name, (env, where) in VARIANTS.items():
            results[name].append(serve_variant(env, where, args.n, Path(tempfile.mkdtemp()) / "router_up.log"))
        plain = bench_plain_fastapi(args.n)
        results["plain FastAPI (baseline)"].append({k: plain[k] for k in ("1_clients", "16_clients")})
    result = {"rounds": args.rounds, "n": args.n, "variants": VARIANTS, "results": results}
    (args.out / "serve_flags.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "serve_flags.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
