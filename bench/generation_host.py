"""Issue 16's tiny answer: is the generation slower inside its Serve replica, and if so, which layer of the host
makes it so? The same tiny-model generation (the bench's prompt, 32 tokens, the replica's own runtime settings),
timed the same way (`Generation.latency_s`, inside `backend.generate`) in four hosts, in alternating rounds while
the default ensemble is up and idle:
- a plain process with no Ray in it;
- a plain Ray actor on the ensemble's cluster (a Ray worker process, no Serve);
- the ensemble's own Serve replica, asked over the ingress's direct port with the model pinned;
- this driver, connected to Ray (the bench's baseline runs here, after the cluster is down).
Then the plain process again with the cluster down: the bench's "alone". Beside each host's timings, the CPU every
thread of its process used while it generated (/proc/PID/task), grouped by thread name, so what runs beside the
generation inside the process shows up.

  .venv/bin/python bench/generation_host.py --out bench     # about 4 minutes; writes generation_host.md and .json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_router import OVERHEAD_PROMPT, OVERHEAD_TOKENS, TINY, _tiny_backend  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
HOSTS = ("plain process", "Ray actor", "Serve replica", "driver (Ray connected)")


def request():
    from models.backend import GenerationRequest

    return GenerationRequest(messages=[{"role": "user", "content": OVERHEAD_PROMPT}], max_tokens=OVERHEAD_TOKENS,
                             temperature=0.0)


def generate_times(backend, n: int) -> list[float]:
    """n generations, each its latency_s as the backend measures it."""
    return [asyncio.run(backend.generate(request())).latency_s for _ in range(n)]


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of a process, summed by thread name."""
    out: dict[str, float] = defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a thread that ended between the listing and the read
        out[name] += (int(fields[11]) + int(fields[12])) / TICKS
    return out


class PlainProcess:
    """A child process with no Ray in it: one backend, one line in (a count), one line out (its times)."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, __file__, "--child"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the plain process did not load the tiny model")
        self.pid = self.proc.pid

    def times(self, n: int) -> list[float]:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def child() -> None:
    backend = _tiny_backend()
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps(generate_times(backend, int(line))), flush=True)


def ray_actor():
    import ray

    @ray.remote(num_cpus=0)
    class Generator:
        def __init__(self):
            self.backend = _tiny_backend()

        def pid(self) -> int:
            return os.getpid()

        def times(self, n: int) -> list[float]:
            return generate_times(self.backend, n)

    actor = Generator.remote()
    return actor, ray.get(actor.pid.remote())


def replica_times(http: httpx.Client, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        reply = http.post(f"{url}/v1/chat/completions", json={
            "model": TINY, "max_tokens": OVERHEAD_TOKENS, "temperature": 0,
            "messages": [{"role": "user", "content": OVERHEAD_PROMPT}]})
        reply.raise_for_status()
        out.append(reply.json()["router"]["model_latency_s"])
    return out


def timed(pid: int, run) -> tuple[list[float], dict[str, float]]:
    before = thread_cpu(pid)
    times = run()
    after = thread_cpu(pid)
    return times, {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def summary(times: list[float], cpu: dict[str, float]) -> dict:
    total = sum(times)
    return {"n": len(times), "p50_ms": round(statistics.median(times) * 1000, 1),
            "mean_ms": round(statistics.fmean(times) * 1000, 1),
            "threads_cpu_per_generation_ms": {k: round(v / len(times) * 1000, 1)
                                              for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])},
            "process_cpu_share_of_wall": round(sum(cpu.values()) / total, 3)}


def measure(rounds: int, per_round: int) -> dict:
    from bench.bench_router import replica_pids
    from router.serving.local_ensemble import local_ensemble

    plain = PlainProcess()
    times: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, dict[str, float]] = {h: defaultdict(float) for h in HOSTS}
    try:
        with local_ensemble() as ens, httpx.Client(timeout=300) as http:
            actor, actor_pid = ray_actor()
            import ray

            direct = ens.live_direct()
            replica_pid = next(p for p, name in replica_pids(ens.dashboard).items() if name == TINY)
            driver = _tiny_backend()
            runs = {
                "plain process": (plain.pid, lambda: plain.times(per_round)),
                "Ray actor": (actor_pid, lambda: ray.get(actor.times.remote(per_round))),
                "Serve replica": (replica_pid, lambda: replica_times(http, direct, per_round)),
                "driver (Ray connected)": (os.getpid(), lambda: generate_times(driver, per_round)),
            }
            for _, run in runs.values():
                run()  # warm-up: the prompt cache and the first allocations
            for r in range(rounds):
                order = HOSTS[r % len(HOSTS):] + HOSTS[:r % len(HOSTS)]  # each host takes each slot in turn
                for host in order:
                    pid, run = runs[host]
                    got, used = timed(pid, run)
                    times[host] += got
                    for k, v in used.items():
                        cpu[host][k] += v
            ray.kill(actor)
        plain.times(2)
        alone, alone_cpu = timed(plain.pid, lambda: plain.times(rounds * per_round))
    finally:
        plain.close()
    out = {host: summary(times[host], cpu[host]) for host in HOSTS}
    out["plain process, cluster down"] = summary(alone, alone_cpu)
    return out


def render(r: dict) -> str:
    base = r["hosts"]["plain process"]["p50_ms"]
    lines = ["# Where the tiny model's generation runs slower (issue 16)", "",
             f"Command: `.venv/bin/python bench/generation_host.py --out bench` ({r['rounds']} alternating rounds of "
             f"{r['per_round']} generations per host, the default ensemble up and idle; {r['machine']}). Each "
             "generation is the bench's tiny answer (32 tokens, the replica's runtime settings), timed inside "
             "`backend.generate` in every host.", "",
             "| host | p50 ms | mean ms | p50 vs plain process | its process's CPU / wall | its threads' CPU per generation (ms) |",
             "|---|---|---|---|---|---|"]
    for host, s in r["hosts"].items():
        threads = ", ".join(f"{k} {v}" for k, v in list(s["threads_cpu_per_generation_ms"].items())[:6])
        lines.append(f"| {host} | {s['p50_ms']} | {s['mean_ms']} | {s['p50_ms'] / base:.3f} | "
                     f"{s['process_cpu_share_of_wall']} | {threads} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for generation_host.md and .json")
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds (default 8)")
    parser.add_argument("--per-round", type=int, default=10, help="generations per host per round (default 10)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child()
    if args.out is None:
        parser.error("--out is required")
    if args.rounds < 1 or args.per_round < 1:
        parser.error("--rounds and --per-round must be at least 1")
    result = {"machine": "2 CPU cores, no GPU", "rounds": args.rounds, "per_round": args.per_round,
              "hosts": measure(args.rounds, args.per_round)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generation_host.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "generation_host.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
