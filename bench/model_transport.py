"""Issue 16's tiny answer: how the ingress calls the model replicas. Ray actor calls (Serve's default handle) against
Serve's inter-deployment gRPC (what its throughput mode turns on), chosen by the ingress's `model_calls` arg. Each
arm is a freshly deployed ingress of one running ensemble, the arms alternating round by round; each round is
make bench's tiny answer (20 answers on the ingress replica's own port), split into the request path and the
generation timed inside the model replica.

    .venv/bin/python bench/model_transport.py --out bench     # about 4 minutes; writes model_transport.md and .json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_router import alternating_ingress_args, ensemble_answer_ms, percentiles  # noqa: E402

ARMS = ("actor", "grpc")


def render(r: dict) -> str:
    lines = ["# How the ingress calls the models: Ray actor calls against Serve's gRPC (issue 16)", "",
             f"Command: `.venv/bin/python bench/model_transport.py --out bench` ({r['rounds']} alternating rounds, "
             f"each a freshly deployed ingress; {r['machine']}). The tiny model's answer (32 tokens), 20 a round, on "
             "the ingress replica's own port.", "",
             "| `model_calls` | whole answer p50, all rounds (ms) | request path p50 by round (ms) | generation in the "
             "replica p50 by round (ms) |", "|---|---|---|---|"]
    for arm in ARMS:
        a = r["arms"][arm]
        lines.append(f"| {arm} | {a['answer']['p50_ms']} | {' / '.join(map(str, a['request_path_p50_ms']))} | "
                     f"{' / '.join(map(str, a['generation_p50_ms']))} |")
    lines += ["", f"- Request path, median of the rounds' p50s: actor {r['request_path_ms']['actor']} ms, gRPC "
              f"{r['request_path_ms']['grpc']} ms."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for model_transport.md and .json")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    from router.serving.local_ensemble import local_ensemble

    with local_ensemble() as ens:
        rounds = alternating_ingress_args(ens, "model_calls", ARMS, args.rounds,
                                          lambda: ensemble_answer_ms(ens.live_direct()))
    arms = {arm: {"answer": percentiles([s for a in rounds[arm] for s in a["samples_ms"]]),
                  "request_path_p50_ms": [a["request_path"]["p50_ms"] for a in rounds[arm]],
                  "generation_p50_ms": [a["generation_in_replica"]["p50_ms"] for a in rounds[arm]]}
            for arm in ARMS}
    result = {"machine": "2 CPU cores, no GPU", "rounds": args.rounds, "arms": arms,
              "request_path_ms": {arm: round(statistics.median(arms[arm]["request_path_p50_ms"]), 1) for arm in ARMS}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model_transport.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "model_transport.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
