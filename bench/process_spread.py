"""Issue 16's tiny answer: how far apart are identical llama.cpp processes on this machine? make bench's
alternating rounds found the generation slower in the model replica than alone in-process by the same 16-19%
in every round, where bench/generation_host.py had found every host within 3.5%. So this times one thing only,
the same tiny-model generation in plain child processes with no Ray in them (bench/generation_host.py's), that
differ in nothing but when they loaded the model:
- two loaded first, on a quiet machine;
- two loaded while the default ensemble is up (its four models loaded just before);
- two loaded after the ensemble is shut down, as make bench's in-process side is.
All six are then timed with the cluster down, in alternating rounds, each round in a rotated order, so that
neither the host's drift nor a place in the round favours any of them.

  .venv/bin/python bench/process_spread.py --out bench     # about 3 minutes; writes process_spread.md and .json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.generation_host import PlainProcess  # noqa: E402

CONDITIONS = ("loaded first, quiet machine", "loaded while the ensemble is up", "loaded after the ensemble is down")


def load_processes(per_condition: int) -> list[tuple[str, PlainProcess]]:
    from router.serving.local_ensemble import local_ensemble

    loaded = [(CONDITIONS[0], PlainProcess()) for _ in range(per_condition)]
    with local_ensemble():
        loaded += [(CONDITIONS[1], PlainProcess()) for _ in range(per_condition)]
    loaded += [(CONDITIONS[2], PlainProcess()) for _ in range(per_condition)]
    return loaded


def spread(rounds: int, per_round: int, per_condition: int) -> dict:
    processes = load_processes(per_condition)
    times: list[list[float]] = [[] for _ in processes]
    round_p50s: list[list[float]] = [[] for _ in processes]
    try:
        for _, process in processes:
            process.times(2)  # warm-up
        for r in range(rounds):
            for i in [(r + k) % len(processes) for k in range(len(processes))][::-1]:  # rotated, last loaded first
                got = processes[i][1].times(per_round)
                times[i] += got
                round_p50s[i].append(round(statistics.median(got) * 1000, 1))
    finally:
        for _, process in processes:
            process.close()
    rows = [{"process": i + 1, "condition": condition, "p50_ms": round(statistics.median(times[i]) * 1000, 1),
             "round_p50s_ms": round_p50s[i]} for i, (condition, _) in enumerate(processes)]
    p50s = [row["p50_ms"] for row in rows]
    by_condition = {c: round(statistics.median(t for i, (cond, _) in enumerate(processes) if cond == c
                                               for t in times[i]) * 1000, 1) for c in CONDITIONS}
    return {"rounds": rounds, "per_round": per_round, "processes": rows, "p50_by_condition_ms": by_condition,
            "slowest_vs_fastest_process": round(max(p50s) / min(p50s), 3)}


def markdown(result: dict) -> str:
    lines = ["# Identical llama.cpp processes, loaded at different times (issue 16)", "",
             "Command: `.venv/bin/python bench/process_spread.py --out bench` (plain child processes with no Ray, each "
             "the tiny model with the replica's runtime settings; all timed with the cluster down, in "
             f"{result['rounds']} rotated rounds of {result['per_round']} generations each, timed inside "
             "`backend.generate`; 2 CPU cores, no GPU).", "",
             "| process | loaded | p50 ms | p50 by round (ms) |", "|---|---|---|---|"]
    lines += [f"| {row['process']} | {row['condition']} | {row['p50_ms']} | "
              + " / ".join(f"{v:g}" for v in row["round_p50s_ms"]) + " |" for row in result["processes"]]
    lines += ["", "| loaded | p50 ms, both processes pooled |", "|---|---|"]
    lines += [f"| {c} | {v} |" for c, v in result["p50_by_condition_ms"].items()]
    lines += ["", f"Slowest process against the fastest: {result['slowest_vs_fastest_process']}×."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for process_spread.md and .json")
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 21), metavar="1..20")
    parser.add_argument("--per-round", type=int, default=8, choices=range(1, 101), metavar="1..100")
    parser.add_argument("--per-condition", type=int, default=2, choices=range(1, 5), metavar="1..4")
    args = parser.parse_args(argv)
    result = spread(args.rounds, args.per_round, args.per_condition)
    print(markdown(result), end="")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "process_spread.json").write_text(json.dumps(result, indent=1))
        (args.out / "process_spread.md").write_text(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
