"""Where the CPU goes while the ensemble answers (issue 16): CPU seconds per process, from /proc, summed over
20 sequential tiny-model answers, grouped by what each process is (a model replica, the ingress, the proxy,
Ray's own daemons).

  .venv/bin/python bench/cpu_share.py              # prints a table; writes bench/cpu_share.json
  .venv/bin/python bench/cpu_share.py --streams 4  # 4 concurrent streams of 64 tokens, 5 times: writes
                                                   # bench/cpu_share_streams.json, the tiny replica split by thread
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.serving.local_ensemble import local_ensemble  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
ANSWERS = 20
TINY = "smollm2-135m"
NOT_THE_ENSEMBLE = ("cpu_share", "other")  # this script (the client) and whatever else runs here


def cpu_by_process() -> dict[int, tuple[str, float]]:
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            found[int(proc.name)] = (cmd, (int(fields[11]) + int(fields[12])) / TICKS)
        except (OSError, ValueError, IndexError):
            continue
    return found


def threads_of(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of one process: a llama.cpp generation thread apart from the Python threads
    that carry its tokens (the event loop, Ray's workers)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            found[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICKS
        except (OSError, ValueError, IndexError):
            continue
    return found


def kind(cmd: str) -> str:
    replica = re.search(r"ServeReplica:router:([\w.\-]+)", cmd)
    if replica:
        return f"replica {replica.group(1)}"
    for name in ("ProxyActor", "ServeController", "gcs_server", "raylet", "dashboard", "DashboardAgent",
                 "RuntimeEnvAgent", "log_monitor", "cpu_share"):
        if name in cmd:
            return name
    return "other ray" if "ray" in cmd else "other"


async def stream_answers(base: str, streams: int) -> list[tuple[int, int, float]]:
    """`streams` concurrent streamed answers of the tiny model, each as (its tokens, from its usage; its events
    with text, several tokens each with the replicas' stream_interval_ms; seconds to its first token)."""
    body = {"model": TINY, "stream": True, "max_tokens": 64, "temperature": 0,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Write a long story about a robot who learns to paint."}]}

    async def one(http) -> tuple[int, int, float]:
        started, first, events, tokens = time.perf_counter(), 0.0, 0, 0
        async with http.stream("POST", f"{base}/v1/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                    events += 1
                    first = first or time.perf_counter() - started
        return tokens, events, first

    async with httpx.AsyncClient(timeout=300) as http:
        return await asyncio.gather(*(one(http) for _ in range(streams)))


def share(before: dict, after: dict, wall: float, **extra) -> dict:
    used: dict[str, float] = defaultdict(float)
    for pid, (cmd, seconds) in after.items():
        used[kind(cmd)] += seconds - before.get(pid, (cmd, seconds))[1]
    total = sum(used.values())
    rows = sorted(((k, round(v, 2), round(v / total, 3)) for k, v in used.items() if v > 0.005), key=lambda r: -r[1])
    return {**extra, "wall_s": round(wall, 2), "cpu_s_total": round(total, 2), "cores_busy": round(total / wall, 2),
            "by_process": rows}


def streams_main(streams: int, rounds: int = 5) -> None:
    with local_ensemble() as ens:
        asyncio.run(stream_answers(ens.base, streams))  # warm-up
        time.sleep(2)
        tiny = next(pid for pid, (cmd, _) in cpu_by_process().items() if kind(cmd) == f"replica {TINY}")
        before, threads_before, started = cpu_by_process(), threads_of(tiny), time.perf_counter()
        answers = [a for _ in range(rounds) for a in asyncio.run(stream_answers(ens.base, streams))]
        wall, after, threads_after = time.perf_counter() - started, cpu_by_process(), threads_of(tiny)
    by_thread = sorted((threads_after[t] - threads_before.get(t, 0.0) for t in threads_after), reverse=True)
    tokens, events = sum(a[0] for a in answers), sum(a[1] for a in answers)
    result = share(before, after, wall, streams=streams, rounds=rounds, tokens=tokens, text_events=events,
                   tokens_per_s=round(tokens / wall, 1),
                   tiny_replica_busiest_thread_cpu_s=round(by_thread[0], 2),
                   tiny_replica_other_threads_cpu_s=round(sum(by_thread[1:]), 2))
    ensemble = sum(seconds for k, seconds, _ in result["by_process"] if k not in NOT_THE_ENSEMBLE)
    result["cpu_ms_per_token_outside_generation"] = round(1000 * (ensemble - by_thread[0]) / tokens, 2)
    result["cpu_ms_per_token_by_process"] = {k: round(1000 * v / tokens, 2) for k, v, _ in result["by_process"]}
    Path("bench/cpu_share_streams.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=0, help="concurrent streams (0: 20 whole answers in a row)")
    args = parser.parse_args()
    if args.streams < 0:
        parser.error("--streams must be 0 or more")
    if args.streams:
        return streams_main(args.streams)
    with local_ensemble() as ens, httpx.Client(timeout=300) as http:
        body = {"model": "auto", "max_tokens": 32, "temperature": 0,
                "messages": [{"role": "user", "content": "Hi! How are you today?"}]}
        for _ in range(3):
            http.post(f"{ens.base}/v1/chat/completions", json=body)
        time.sleep(2)
        before, started = cpu_by_process(), time.perf_counter()
        for _ in range(ANSWERS):
            http.post(f"{ens.base}/v1/chat/completions", json=body).raise_for_status()
        wall, after = time.perf_counter() - started, cpu_by_process()
    result = share(before, after, wall, answers=ANSWERS)
    Path("bench/cpu_share.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
