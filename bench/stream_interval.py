"""Issue 16's tokens at 4 streams: the model replicas' `stream_interval_ms` (router/serving/coalescing.py), which
sends the tokens that come within that many ms of the last piece as one piece. Each arm is a fresh ensemble with
the tiny model's interval set, the arms alternating round by round; each round measures the served tokens/s at 4
concurrent streams of 64 tokens (counted from the streams' usage, not their events), the events a stream carried,
the time to its first token, and the CPU the ensemble's processes (not this script, the client) used outside the
tiny model's generation thread; the raw runtime in-process is measured in every round too, make bench's baseline.

    .venv/bin/python bench/stream_interval.py --out bench     # about 6 minutes; writes stream_interval.md and .json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_router import TINY, raw_stream_tokens  # noqa: E402
from bench.cpu_share import NOT_THE_ENSEMBLE, cpu_by_process, kind, stream_answers, threads_of  # noqa: E402

STREAMS, TOKENS, MEASURES = 4, 64, 3  # TOKENS: what cpu_share.stream_answers asks for


def four_streams(base: str) -> dict:
    """STREAMS concurrent streams: their tokens/s (from usage), events with text, and first-token times."""
    started = time.perf_counter()
    streams = asyncio.run(stream_answers(base, STREAMS))
    wall = time.perf_counter() - started
    return {"tokens_per_s": sum(s[0] for s in streams) / wall, "events_per_stream": [s[1] for s in streams],
            "first_token_ms": [1000 * s[2] for s in streams]}


def one_arm(interval_ms: int) -> dict:
    from router.serving.local_ensemble import local_ensemble

    config = yaml.safe_load((Path(__file__).resolve().parent.parent / "serve_config.yaml").read_text())
    per_model = config["applications"][0]["args"].setdefault("runtime_per_model", {})
    per_model[TINY] = {**(per_model.get(TINY) or {}), "stream_interval_ms": interval_ms}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "serve_config.yaml"
        path.write_text(yaml.safe_dump(config))
        with local_ensemble(config_path=path) as ens:
            four_streams(ens.base)  # warm-up
            tiny = next(pid for pid, (cmd, _) in cpu_by_process().items() if kind(cmd) == f"replica {TINY}")
            before, threads_before = cpu_by_process(), threads_of(tiny)
            runs = [four_streams(ens.base) for _ in range(MEASURES)]
            after, threads_after = cpu_by_process(), threads_of(tiny)
    total = sum(seconds - before.get(pid, (cmd, seconds))[1] for pid, (cmd, seconds) in after.items()
                if pid != os.getpid() and kind(cmd) not in NOT_THE_ENSEMBLE)  # the ensemble's processes alone
    generation = max(threads_after[t] - threads_before.get(t, 0.0) for t in threads_after)
    tokens = MEASURES * STREAMS * TOKENS
    return {"tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in runs), 1),
            "events_per_stream": statistics.median(e for r in runs for e in r["events_per_stream"]),
            "first_token_p50_ms": round(statistics.median(f for r in runs for f in r["first_token_ms"]), 1),
            "cpu_ms_per_token_outside_generation": round(1000 * (total - generation) / tokens, 2)}


def render(r: dict) -> str:
    lines = ["# Stream coalescing: the tiny model's tokens at 4 streams by `stream_interval_ms` (issue 16)", "",
             f"Command: `.venv/bin/python bench/stream_interval.py --out bench` ({r['rounds']} alternating rounds, "
             f"each arm a fresh ensemble; {r['machine']}). {STREAMS} concurrent streams of {TOKENS} tokens, "
             f"{MEASURES} times an arm, tokens counted from the streams' usage; the raw runtime in-process in every "
             "round.", "",
             "| `stream_interval_ms` | tokens/s by round | served / raw by round | median served / raw | events a "
             "stream | first token p50 (ms) | CPU ms a token outside generation |", "|---|---|---|---|---|---|---|"]
    for arm, a in r["arms"].items():
        rounds = a["rounds"]
        lines.append(f"| {arm} | {' / '.join(str(x['tokens_per_s']) for x in rounds)} | "
                     f"{' / '.join(str(x) for x in a['vs_raw'])} | {a['vs_raw_median']} | "
                     f"{statistics.median(x['events_per_stream'] for x in rounds)} | "
                     f"{statistics.median(x['first_token_p50_ms'] for x in rounds)} | "
                     f"{statistics.median(x['cpu_ms_per_token_outside_generation'] for x in rounds)} |")
    lines += ["", f"Raw runtime tokens/s by round: {' / '.join(map(str, r['raw_tokens_per_s']))}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for stream_interval.md and .json")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--intervals", type=int, nargs="+", default=[0, 50, 100], help="arms, in ms")
    args = parser.parse_args()
    if args.rounds < 1 or any(i < 0 or i > 1000 for i in args.intervals):
        parser.error("--rounds must be at least 1 and each interval within 0-1000 ms")
    arms: dict = {i: [] for i in args.intervals}
    raw = []
    for _ in range(args.rounds):
        raw.append(raw_stream_tokens(STREAMS, TOKENS))
        for interval in args.intervals:
            arms[interval].append(one_arm(interval))
    result = {"machine": "2 CPU cores, no GPU", "rounds": args.rounds, "raw_tokens_per_s": raw, "arms": {
        i: {"rounds": rounds, "vs_raw": [round(x["tokens_per_s"] / b, 3) for x, b in zip(rounds, raw)],
            "vs_raw_median": round(statistics.median(x["tokens_per_s"] / b for x, b in zip(rounds, raw)), 3)}
        for i, rounds in arms.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stream_interval.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "stream_interval.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
