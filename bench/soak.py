"""A soak with kills (`make soak`): the cluster profile on a 2-node Ray cluster on this machine, loopback only.

  make soak                       # 5 minutes: .venv/bin/python bench/soak.py --duration 300
  .venv/bin/python bench/soak.py --duration 60 --kill-every 15   # the test's short version

1. Capacity: closed-loop clients for a short while give the ensemble's answers per second (not counted below).
2. Load: requests arrive open-loop at 2x that rate for --duration seconds.
3. Faults: a model replica's process is killed (SIGKILL) every --kill-every seconds, round-robin over the models;
   once, at half time, the second node dies (its raylet and workers killed) and comes back --node-down-s later.
4. Accounting: every request sent ends answered (200) or rejected (a 429/503 that carries Retry-After), within
   --hung-after seconds; anything else is lost, no reply in time is hung. The goal: lost = hung = 0.
Recorded: p50/p99 of answered, rejects by code, fallbacks, and after each kill the time until the killed
deployment has a new running replica and /healthz is green (watched once a second through the run and up to
half the run (at most 2 minutes) after it, so a slow recovery is timed rather than cut off by the next kill).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_router import percentiles  # noqa: E402  (this directory is on sys.path when run as a script)
from router.serving.local_cluster import local_cluster  # noqa: E402

MODELS = ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
PROMPTS = ["Hi! How are you today?", "Write a Python function that reverses a string.",
           "A shop sells pens at $2 each. Ann buys 3 pens. How much does she pay?", "Thanks, see you tomorrow!"]
MAX_TOKENS = 16


def body(i: int) -> dict:
    return {"model": "auto", "max_tokens": MAX_TOKENS, "temperature": 0,
            "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}


async def measure_capacity(http: httpx.AsyncClient, base: str, seconds: float, clients: int = 6) -> float:
    done, stop_at = 0, time.monotonic() + seconds

    async def client(k: int):
        nonlocal done
        i = k
        while time.monotonic() < stop_at:
            if (await http.post(f"{base}/v1/chat/completions", json=body(i))).status_code == 200:
                done += 1
            i += clients

    started = time.monotonic()
    await asyncio.gather(*(client(k) for k in range(clients)))
    return done / (time.monotonic() - started)


class Ledger:
    def __init__(self):
        self.outcomes: Counter = Counter()
        self.answered_ms: list[float] = []
        self.rejects: Counter = Counter()
        self.lost: list[str] = []
        self.fallbacks = 0
        self.models: Counter = Counter()

    async def send(self, http: httpx.AsyncClient, base: str, i: int, hung_after: float, t0: float) -> None:
        started = time.perf_counter()
        at = f"sent at {time.monotonic() - t0:.1f}s"
        try:
            reply = await asyncio.wait_for(http.post(f"{base}/v1/chat/completions", json=body(i)), hung_after)
        except asyncio.TimeoutError:
            self.outcomes["hung"] += 1
            return
        except httpx.HTTPError as exc:
            self.outcomes["lost"] += 1
            self.lost.append(f"{at}: {type(exc).__name__}: {exc}"[:200])
            return
        if reply.status_code == 200:
            self.outcomes["answered"] += 1
            self.answered_ms.append((time.perf_counter() - started) * 1000)
            self.models[reply.headers.get("x-router-model", "?")] += 1
            self.fallbacks += "x-router-fallback" in reply.headers
        elif reply.status_code in (429, 503) and "retry-after" in reply.headers:
            self.outcomes["rejected"] += 1
            try:
                code = reply.json()["error"].get("code") or str(reply.status_code)
            except (ValueError, KeyError, AttributeError):
                code = str(reply.status_code)
            self.rejects[code] += 1
        else:
            self.outcomes["lost"] += 1
            self.lost.append(f"{at}: {reply.status_code} {reply.text[:160]}")


def healthz_green(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


class Watcher(threading.Thread):
    """Samples, once a second for the whole run, which replicas run (pids per deployment) and whether /healthz is
    green, so each kill's recovery is timed even when it takes longer than the gap to the next kill."""

    def __init__(self, ens):
        super().__init__(daemon=True)
        self.ens, self.samples, self.stop = ens, [], threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            running: dict[str, set] = {}
            try:
                for r in self.ens.replicas():
                    if r["state"] == "RUNNING":
                        running.setdefault(r["deployment"], set()).add(r["pid"])
            except (httpx.HTTPError, ValueError):
                continue  # the controller is busy or restarting: no sample this second
            self.samples.append((time.monotonic(), running, healthz_green(self.ens.base), free_cpus()))

    def recovery(self, at: float, replaced: set, known_pids: frozenset) -> dict:
        """Seconds from a kill at `at` until every deployment in `replaced` has a new running replica, and until
        /healthz is green after that, or after red (0 when it never went red; None: not by the end of the watch)."""
        back_s = green_s = None
        red_seen, waiting = False, []
        for t, running, green, free in (s for s in self.samples if s[0] > at):
            if back_s is None and all(running.get(d, set()) - known_pids for d in replaced):
                back_s = round(t - at, 1)
            if back_s is None:  # what the cluster looked like while the replacement waited
                waiting.append((free, sum(len(pids) for name, pids in running.items() if name in MODELS)))
            red_seen |= not green
            if green and green_s is None and (red_seen or back_s is not None):
                green_s = round(t - at, 1)
        if not red_seen and any(s[0] > at for s in self.samples):
            green_s = 0.0
        frees = [free for free, _ in waiting if free is not None]
        return {"replaced_after_s": back_s, "healthz_green_after_s": green_s, "healthz_red_seen": red_seen,
                # evidence for a slow replacement: no free CPU for it while other models' replicas ran
                "while_waiting": {"min_free_cpus": min(frees, default=None),
                                  "max_model_replicas": max((n for _, n in waiting), default=None)}}


def free_cpus() -> float | None:
    """Logical CPUs no actor or task holds, cluster-wide (what a new replica needs to be placed)."""
    import ray

    try:
        return round(ray.available_resources().get("CPU", 0.0), 1)
    except Exception:  # the GCS is briefly unreachable while a node dies: no figure this second
        return None


def kill_replica(ens, deployment: str) -> dict | None:
    """SIGKILL one running replica of `deployment`: a crash, not a polite stop."""
    candidates = [r for r in ens.replicas() if r["deployment"] == deployment and r["state"] == "RUNNING" and r["pid"]]
    if not candidates:
        return None
    victim = random.choice(candidates)
    os.kill(int(victim["pid"]), signal.SIGKILL)
    return {"deployment": deployment, "pid": victim["pid"], "on_head": victim["node_id"] == ens.head_node_id(),
            "running_before": len(candidates)}


def chaos(ens, started: float, duration: float, kill_every: float, node_kill_at: float, node_down_s: float) -> list:
    """On the main thread (Ray starts a node only there): replica kills and the node's death and return. Each
    event keeps when it happened, the pids running before it and the deployments that lost a replica."""
    events, turn, node_done, next_kill = [], 0, False, kill_every
    while time.monotonic() - started < duration:
        now = time.monotonic() - started
        if not node_done and now >= node_kill_at:
            node_done, at = True, time.monotonic()
            replicas = ens.replicas()
            lost = {r["deployment"] for r in replicas if r["node_id"] != ens.head_node_id() and r["state"] == "RUNNING"}
            ens.kill_worker_node()
            time.sleep(node_down_s)
            ens.restart_worker_node()
            events.append({"at_s": round(now, 1), "kill": "worker node",
                           "restarted_after_s": round(time.monotonic() - at, 1), "replicas_lost": sorted(lost),
                           "_at": at, "_known": frozenset(r["pid"] for r in replicas), "_replaced": lost})
            next_kill = time.monotonic() - started + kill_every
        elif now >= next_kill:
            deployment = MODELS[turn % len(MODELS)]
            turn += 1
            known = frozenset(r["pid"] for r in ens.replicas())
            killed = kill_replica(ens, deployment)
            if killed:
                events.append({"at_s": round(now, 1), "kill": "replica", **killed, "_at": time.monotonic(),
                               "_known": known, "_replaced": {deployment}})
            next_kill = now + kill_every
        else:
            time.sleep(0.25)
    return events


def timed_recoveries(events: list, watcher: Watcher, drain_s: float) -> list:
    """Each event with its recovery times, watching up to `drain_s` past the load for the last ones."""
    deadline = time.monotonic() + drain_s
    while time.monotonic() < deadline and any(watcher.recovery(e["_at"], e["_replaced"], e["_known"])
                                              ["healthz_green_after_s"] is None for e in events):
        time.sleep(2)
    watcher.stop.set()
    return [{**{k: v for k, v in e.items() if not k.startswith("_")},
             **watcher.recovery(e["_at"], e["_replaced"], e["_known"])} for e in events]


async def offer_load(ens, duration: float, hung_after: float, capacity_s: float, ledger: Ledger,
                     load_started: threading.Event, stats: dict) -> None:
    async with httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=512)) as http:
        capacity = await measure_capacity(http, ens.base, capacity_s)
        rate = stats["offered_per_s"] = 2 * max(capacity, 0.2)
        stats["capacity_answers_per_s"] = round(capacity, 2)
        stats["started"] = time.monotonic()
        load_started.set()
        sent, tasks = 0, []
        while time.monotonic() - stats["started"] < duration:
            tasks.append(asyncio.create_task(ledger.send(http, ens.base, sent, hung_after, stats["started"])))
            sent += 1
            await asyncio.sleep(random.expovariate(rate))  # Poisson arrivals: open loop, as real clients arrive
        stats["sent"] = sent
        await asyncio.gather(*tasks)


def soak(ens, duration: float, kill_every: float, node_kill_at: float, node_down_s: float, hung_after: float,
         capacity_s: float) -> dict:
    ledger, stats, load_started = Ledger(), {}, threading.Event()
    load = threading.Thread(target=lambda: asyncio.run(offer_load(ens, duration, hung_after, capacity_s, ledger,
                                                                  load_started, stats)), daemon=True)
    load.start()
    if not load_started.wait(capacity_s + 600):
        raise RuntimeError("the capacity measurement did not finish")
    watcher = Watcher(ens)
    watcher.start()
    events = chaos(ens, stats["started"], duration, kill_every, node_kill_at, node_down_s)
    load.join(hung_after + 60)
    events = timed_recoveries(events, watcher, drain_s=min(120.0, duration / 2))
    answered, sent = ledger.answered_ms, stats.get("sent", 0)
    return {"duration_s": duration, "capacity_answers_per_s": stats["capacity_answers_per_s"],
            "offered_per_s": round(stats["offered_per_s"], 2), "sent": sent,
            **{k: ledger.outcomes.get(k, 0) for k in ("answered", "rejected", "lost", "hung")},
            "accounted": not load.is_alive() and sum(ledger.outcomes.values()) == sent,
            "answered_p50_ms": percentiles(answered)["p50_ms"] if answered else None,
            "answered_p99_ms": percentiles(answered)["p99_ms"] if answered else None,
            "rejects_by_code": dict(ledger.rejects),
            "fallbacks": ledger.fallbacks, "answered_by_model": dict(ledger.models), "lost_examples": ledger.lost[:5],
            "slowest_healthz_green_after_s": max((e["healthz_green_after_s"] for e in events
                                                  if e["healthz_green_after_s"] is not None), default=None),
            "kills_never_green_again": sum(e["healthz_green_after_s"] is None for e in events),
            "kills": events}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300, help="seconds of load (default 300)")
    parser.add_argument("--kill-every", type=float, default=30, help="seconds between replica kills (default 30)")
    parser.add_argument("--node-kill-at", type=float, help="second at which the worker node dies (default: half time)")
    parser.add_argument("--node-down-s", type=float, default=20, help="seconds the node stays down (default 20)")
    parser.add_argument("--hung-after", type=float, default=240,
                        help="a request with no reply after this many seconds counts as hung (default 240)")
    parser.add_argument("--capacity-s", type=float, default=20, help="seconds spent measuring capacity (default 20)")
    parser.add_argument("--out", default="bench/soak.json")
    args = parser.parse_args(argv)
    for name in ("duration", "kill_every", "node_down_s", "hung_after", "capacity_s"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    node_kill_at = args.duration / 2 if args.node_kill_at is None else args.node_kill_at
    with local_cluster() as ens:
        result = {"machine": "2 CPU cores, no GPU; a 2-node Ray cluster on one machine",
                  "cold_start_s": round(ens.ready_after_s, 1),
                  **soak(ens, args.duration, args.kill_every, node_kill_at, args.node_down_s, args.hung_after,
                         args.capacity_s)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    outcome = main()
    sys.exit(0 if outcome["accounted"] and outcome["lost"] == 0 and outcome["hung"] == 0 else 1)
