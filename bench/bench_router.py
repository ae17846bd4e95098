"""Benchmarks for README.md (loopback only, bounded in count and time).

  make bench            # or: .venv/bin/python bench/bench_router.py [--requests N]

Measures: the in-process routing decision (encoder + classifier + policy), /v1/route through Ray Serve,
cold start until /healthz answers, the resident memory of the whole ensemble, each model's tokens/s, and the tiny
model's answer and streams served against alone in-process, in alternating rounds (about 9 minutes in all).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import httpx

TINY = "smollm2-135m"
PROMPTS = ["Hi! How are you today?", "Write a Python function that merges two sorted lists.",
           "A shop sells pens at $2 and notebooks at $5. Ann buys 3 pens and 2 notebooks. How much does she pay?",
           "Thanks for the help, see you tomorrow!", "Implement binary search in Python and explain it."]


def percentiles(samples_ms: list[float]) -> dict:
    ordered = sorted(samples_ms)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": round(statistics.median(ordered), 3), "p99_ms": round(pick(0.99), 3), "n": len(ordered)}


STATIC_ROUTER = "data/router/static.json"


def bench_in_process(n: int) -> dict:
    from router.decision import decide
    from router.features import Encoder
    from router.policy import load_policy
    from router.service import RoutingService

    service = RoutingService(Encoder(threads=2))  # as the ingress runs it (serve_config.yaml)
    service.apply_policy(load_policy().model_dump(mode="json"))
    for p in PROMPTS:  # warm-up
        service.route(p, 20)
    full, pure = [], []
    live = service.live
    prediction = live.classifier.predict_one(service.features(PROMPTS[1])[0], PROMPTS[1])
    for i in range(n):
        t = time.perf_counter()
        service.route(PROMPTS[i % len(PROMPTS)], 20)
        full.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        decide(prediction.scores, prediction.task, 20, live.policy, service.catalogue, prediction.ood_distance,
               prediction.ood_threshold)
        pure.append((time.perf_counter() - t) * 1000)
    # the same decisions with the router on the static encoder (data/router/static.json, `--encoder
    # minilm-l6-v2-static`): the shipped policy with only its classifier swapped, as an operator's edit would
    static = RoutingService(Encoder(threads=2))
    static.apply_policy({**load_policy().model_dump(mode="json"), "classifier": STATIC_ROUTER})
    for p in PROMPTS:
        static.route(p, 20)
    return {"family": live.classifier.family.label(), "route_in_process": percentiles(full),
            "decide_pure": percentiles(pure), "decisions_per_s": decisions_per_s(service),
            "static_encoder": {"family": static.live.classifier.family.label(),
                               "decisions_per_s": decisions_per_s(static)}}


def decisions_per_s(service, total: int = 640, batch: int = 32) -> dict:
    """Whole decisions (tokens, embedding, classifier, policy, shadow) per second in-process: one at a time, and
    in batches as the ingress makes them from concurrent requests (route_many, serve.batch), in the same run."""
    from router.service import RouteRequest

    requests = [RouteRequest(PROMPTS[i % len(PROMPTS)], 20) for i in range(total)]
    started = time.perf_counter()
    for request in requests:
        service.route_many([request])
    one = total / (time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(0, total, batch):
        service.route_many(requests[i:i + batch])
    batched = total / (time.perf_counter() - started)
    # the ceiling: the encoder alone on the same prompts, batched (the rest of a decision is well under 1 ms)
    texts = [r.text for r in requests]
    tokens = sum(len(e.ids) for e in service.encoder.tokenizer.encode_batch(texts))
    started = time.perf_counter()
    service.encoder.encode(texts, batch_size=batch)
    encoder_s = time.perf_counter() - started
    return {"one_at_a_time": round(one), f"batched_{batch}": round(batched), "batched_vs_one": round(batched / one, 2),
            "encoder_alone_prompts_per_s": round(total / encoder_s), "encoder_tokens_per_s": round(tokens / encoder_s),
            "mean_prompt_tokens": round(tokens / total, 1)}


def memory_of_ray(replica_pids: dict[int, str] | None = None) -> dict:
    """RSS and PSS (shared pages split between processes) summed over every Ray process of this cluster, and
    PSS by kind of process: each replica's deployment (replica_pids: pid -> deployment, from Serve), Serve's
    controller and proxy, Ray's daemons."""
    replica_pids = replica_pids or {}
    rss = pss = count = 0
    by_kind: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "ray" not in cmd or "bench_router" in cmd:
                continue
            fields = dict(line.split(":", 1) for line in (proc / "smaps_rollup").read_text().splitlines()[1:])
            proc_rss, proc_pss = (int(fields[k].split()[0]) for k in ("Rss", "Pss"))
            rss, pss, count = rss + proc_rss, pss + proc_pss, count + 1
            kind = replica_pids.get(int(proc.name)) or _process_kind(cmd)
            by_kind[kind] = by_kind.get(kind, 0) + proc_pss / 1024**2
        except (OSError, ValueError, KeyError):
            continue
    return {"processes": count, "rss_gib": round(rss / 1024**2, 2), "pss_gib": round(pss / 1024**2, 2),
            "pss_gib_by_kind": {k: round(v, 2) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])}}


def _process_kind(cmd: str) -> str:
    """A Ray process's role from its title (a replica's title keeps only the end of its deployment's name)."""
    for kind in ("ServeReplica", "ServeController", "ProxyActor", "DashboardAgent", "RuntimeEnvAgent", "dashboard",
                 "gcs_server", "raylet", "log_monitor", "monitor.py"):
        if kind in cmd:
            return kind
    return "other ray processes"


def replica_pids(dashboard: str) -> dict[int, str]:
    """pid -> deployment of every replica, from Serve's REST API."""
    body = httpx.get(f"{dashboard}/api/serve/applications/", timeout=30).json()
    return {int(r["pid"]): name for app in body.get("applications", {}).values()
            for name, dep in (app.get("deployments") or {}).items() for r in dep.get("replicas") or [] if r.get("pid")}


async def _load(url: str, body_for, total: int, concurrency: int) -> dict:
    """`total` requests from `concurrency` clients at once; throughput and latency percentiles."""
    import asyncio

    samples, queue = [], list(range(total))

    async def client(http):
        while queue:
            i = queue.pop()
            t = time.perf_counter()
            (await http.post(url, json=body_for(i))).raise_for_status()
            samples.append((time.perf_counter() - t) * 1000)

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as http:
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(client(http) for _ in range(concurrency))), timeout=600)
        wall = time.perf_counter() - started
    return {"clients": concurrency, "req_per_s": round(total / wall, 1), **percentiles(samples)}


ROUTE_CLIENTS, STREAMS = (1, 4, 16, 64), (1, 2, 4, 8)  # the scaling curve: cost against work


def route_load(base: str, n: int) -> dict:
    import asyncio

    body = lambda i: {"model": "auto", "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}  # noqa: E731
    return {f"{c}_clients": asyncio.run(_load(f"{base}/v1/route", body, n, c)) for c in ROUTE_CLIENTS}


def bench_plain_fastapi(n: int) -> dict:
    import subprocess
    import sys

    from router.serving.local_ensemble import free_port, http_ok, wait_for

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("plain_fastapi.py")), str(port)])
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 120, "plain FastAPI")
        return route_load(f"http://127.0.0.1:{port}", n)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def stream_tokens(base: str, streams: int, max_tokens: int = 64) -> float:
    """Aggregate tokens/s of the tiny model with `streams` concurrent streaming requests, the tokens counted from
    each stream's usage (an event can carry several: the replicas' stream_interval_ms)."""
    import asyncio

    async def one(http):
        count = 0
        async with http.stream("POST", f"{base}/v1/chat/completions", json={
                "model": TINY, "stream": True, "max_tokens": max_tokens, "temperature": 0,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": "Write a long story about a robot who learns to paint."}]}) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {") and '"usage": {' in line:
                    count = json.loads(line[6:])["usage"]["completion_tokens"]
        return count

    async def run():
        async with httpx.AsyncClient(timeout=300) as http:
            started = time.perf_counter()
            counts = await asyncio.gather(*(one(http) for _ in range(streams)))
            return sum(counts) / (time.perf_counter() - started)

    return round(asyncio.run(run()), 1)


def raw_stream_tokens(streams: int, max_tokens: int = 64) -> float:
    """The same streams from the raw llama.cpp runtime in-process (same model, same runtime settings), no Serve."""
    import asyncio

    from models.backend import GenerationRequest

    backend = _tiny_backend()
    request = GenerationRequest(messages=[{"role": "user", "content": "Write a long story about a robot who learns to "
                                           "paint."}], max_tokens=max_tokens, temperature=0.0)

    async def one():  # the runtime's own count, as the served side reads it from the usage
        return max([delta.output_tokens async for delta in backend.stream(request)])

    async def run():
        await one()  # warm-up
        started = time.perf_counter()
        counts = await asyncio.gather(*(one() for _ in range(streams)))
        return sum(counts) / (time.perf_counter() - started)

    return round(asyncio.run(run()), 1)


def _tiny_backend():
    import yaml

    from models.catalogue import load_catalogue
    from models.registry import make_backend
    from models.runtime_options import backend_options, runtime_for

    config = yaml.safe_load((Path(__file__).resolve().parent.parent / "serve_config.yaml").read_text())
    # the settings the served replica runs with, so the two sides differ only by the serving path
    return make_backend(load_catalogue().model(TINY),
                        **backend_options(runtime_for(config["applications"][0]["args"], TINY)))


OVERHEAD_PROMPT, OVERHEAD_TOKENS, OVERHEAD_RUNS = "Hi! How are you today?", 32, 20


def ensemble_answer_ms(base: str) -> dict:
    """The tiny model's whole answer through the ensemble: HTTP, routing, the Serve hops, generation."""
    samples, in_model, tokens = [], [], set()
    with httpx.Client(timeout=300) as http:
        for _ in range(OVERHEAD_RUNS + 2):
            t = time.perf_counter()
            reply = http.post(f"{base}/v1/chat/completions", json={
                "model": "auto", "max_tokens": OVERHEAD_TOKENS, "temperature": 0,
                "messages": [{"role": "user", "content": OVERHEAD_PROMPT}]}).json()
            samples.append((time.perf_counter() - t) * 1000)
            in_model.append(reply["router"]["model_latency_s"] * 1000)  # generation alone, timed in the replica
            tokens.add((reply["model"], reply["usage"]["completion_tokens"]))
    path = [total - model for total, model in zip(samples, in_model)]
    return {**percentiles(samples[2:]), "samples_ms": [round(s, 3) for s in samples[2:]],
            "answered_by_tokens": sorted(tokens), "generation_in_replica": percentiles(in_model[2:]), "request_path": percentiles(path[2:])}


def direct_answer_ms() -> dict:
    """The same answer from the same model and runtime settings, called in-process with no router or Serve."""
    import asyncio

    from models.backend import GenerationRequest

    backend = _tiny_backend()
    request = GenerationRequest(messages=[{"role": "user", "content": OVERHEAD_PROMPT}], max_tokens=OVERHEAD_TOKENS,
                                temperature=0.0)
    samples, tokens = [], set()
    for _ in range(OVERHEAD_RUNS + 2):
        t = time.perf_counter()
        result = asyncio.run(backend.generate(request))
        samples.append((time.perf_counter() - t) * 1000)
        tokens.add((TINY, result.output_tokens))
    return {**percentiles(samples[2:]), "samples_ms": [round(s, 3) for s in samples[2:]],
            "answered_by_tokens": sorted(tokens)}


SERVED_VS_ALONE_ROUNDS = 3  # rounds of (ensemble up, then down): the answer and the tokens goals pool them


def served_vs_alone_rounds(first_served: dict, first_alone: dict, rounds: int = SERVED_VS_ALONE_ROUNDS) -> dict:
    """Issue 16's answer and tokens goals in alternating rounds: each round measures the tiny model served (a fresh
    ensemble, the ingress's own port) and then alone in-process (the cluster down), so that the host's drift over
    the run hits both sides alike instead of landing on whichever went second (each round is also a new pair of
    llama.cpp processes, and identical ones differ here by up to 18%: bench/process_spread.py). The first round
    is the main ensemble's (its last measurements) and the alone measurements right after it. Each side's answers
    are pooled; tokens/s at 4 streams is the median over rounds."""
    from router.serving.local_ensemble import local_ensemble

    served, alone = [first_served], [first_alone]
    for _ in range(rounds - 1):
        with local_ensemble() as ens:
            served.append({"answer": ensemble_answer_ms(ens.live_direct()),
                           "tokens_4_streams": stream_tokens(ens.base, 4)})
        alone.append({"answer": direct_answer_ms(), "tokens_4_streams": raw_stream_tokens(4)})
    return pooled_rounds(served, alone)


def pooled_rounds(served: list[dict], alone: list[dict]) -> dict:
    """Each side's rounds pooled: the answers' samples into one p50, tokens/s as the median round; then the ratios."""
    pooled = {side: percentiles([s for r in runs for s in r["answer"]["samples_ms"]])
              for side, runs in (("served", served), ("alone", alone))}
    tokens = {side: statistics.median(r["tokens_4_streams"] for r in runs)
              for side, runs in (("served", served), ("alone", alone))}
    return {"rounds": len(served), "answer_served": pooled["served"], "answer_alone": pooled["alone"],
            "round_p50s_served": [r["answer"]["p50_ms"] for r in served],
            "round_p50s_alone": [r["answer"]["p50_ms"] for r in alone],
            "round_tokens_4_streams_served": [r["tokens_4_streams"] for r in served],
            "round_tokens_4_streams_alone": [r["tokens_4_streams"] for r in alone],
            "answer_served_vs_alone_p50": round(pooled["served"]["p50_ms"] / pooled["alone"]["p50_ms"], 3),
            "tokens_served_vs_alone_4_streams": round(tokens["served"] / tokens["alone"], 3)}


LOGGING_ROUNDS = 3  # per arm; on and off alternate, so that drift on a shared machine hits both alike


def alternating_ingress_args(ens, arg: str, values: tuple, rounds: int, measure) -> dict:
    """measure() on a freshly deployed ingress for each value of one of its args, the values alternating
    round by round, so that drift on a shared machine hits every arm alike. Returns value -> that value's
    measurements, in round order. The app is left as serve_config.yaml has it."""
    from router.serving.live import deploy_config
    from router.serving.local_ensemble import http_ok, serve_config, wait_for

    def replica() -> str | None:
        try:
            return ens.policy().get("replica") if http_ok(f"{ens.base}/healthz") else None
        except (httpx.HTTPError, ValueError):
            return None

    def deploy(value=None) -> None:
        before, config = replica(), serve_config(ens.port)
        if value is not None:
            config["applications"][0]["args"][arg] = value
        deploy_config(config, ens.dashboard)
        wait_for(lambda: replica() not in (None, before), 300, f"the new ingress with {arg} {value}")

    arms: dict = {value: [] for value in values}
    try:
        for _ in range(rounds):
            for value in values:
                deploy(value)
                arms[value].append(measure())
    finally:
        deploy()
    return arms


def logging_on_vs_off(ens) -> dict:
    """The tiny model's answers with the decision store on and off (record_decisions: false), in alternating
    rounds, each on a freshly deployed ingress: what logging costs, as a ratio of pooled p50s (the goal: on
    within 5% of off)."""
    arms = alternating_ingress_args(ens, "record_decisions", (False, True), LOGGING_ROUNDS,
                                    lambda: ensemble_answer_ms(ens.base))
    on, off = (percentiles([s for answers in arms[v] for s in answers["samples_ms"]]) for v in (True, False))
    return {"on": on, "off": off, "round_p50s_on": [a["p50_ms"] for a in arms[True]],
            "round_p50s_off": [a["p50_ms"] for a in arms[False]], "on_vs_off_p50": round(on["p50_ms"] / off["p50_ms"], 3)}


def bench_serve(n: int) -> dict:
    from router.serving.local_ensemble import local_ensemble

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
            result["memory"] = memory_of_ray(replica_pids(ens.dashboard))
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
        result["route_load"] = route_load(ens.base, n)
        # the same load on the ingress replica's own port (direct ingress): no proxy hop
        result["route_load_direct"] = route_load(ens.live_direct(), n)
        logging = result["logging_on_vs_off"] = logging_on_vs_off(ens)
        result["logging_on_vs_off_p50"] = logging["on_vs_off_p50"]
        # last, so that the first of the served-against-alone rounds ends right before the alone side
        result["tiny_model_stream_tokens_per_s"] = {f"{k}_streams": stream_tokens(ens.base, k) for k in STREAMS}
        result["tiny_answer_via_ensemble"] = ensemble_answer_ms(ens.base)
        result["tiny_answer_via_direct_ingress"] = ensemble_answer_ms(ens.live_direct())
    # measured after the ensemble is down, so that nothing else runs beside the model
    direct = result["tiny_answer_direct"] = direct_answer_ms()
    raw = result["raw_runtime_stream_tokens_per_s"] = {f"{k}_streams": raw_stream_tokens(k) for k in STREAMS}
    result["served_vs_alone_rounds"] = served_vs_alone_rounds(
        {"answer": result["tiny_answer_via_direct_ingress"],
         "tokens_4_streams": result["tiny_model_stream_tokens_per_s"]["4_streams"]},
        {"answer": direct, "tokens_4_streams": raw["4_streams"]})
    result["served_vs_raw_tokens_4_streams"] = round(result["tiny_model_stream_tokens_per_s"]["4_streams"]
                                                     / raw["4_streams"], 3)
    via = result["tiny_answer_via_ensemble"]
    result["ensemble_overhead_share"] = round((via["p50_ms"] - direct["p50_ms"]) / via["p50_ms"], 3)
    # of that: the request path (HTTP, proxy, routing, Serve hops) against generation slowed by the cluster beside it
    result["request_path_share"] = round(via["request_path"]["p50_ms"] / via["p50_ms"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--out", default="bench/results.json")
    args = parser.parse_args()
    results = {"machine": "2 CPU cores, no GPU", "in_process": bench_in_process(args.requests),
               "plain_fastapi": bench_plain_fastapi(args.requests), "serve": bench_serve(args.requests)}
    serve, plain = results["serve"], results["plain_fastapi"]
    # the issue-16 goals, each a ratio against a baseline of this same run
    results["ratios"] = {
        "route_p50_direct_vs_plain_1_client (goal <= 1.5)": round(
            serve["route_load_direct"]["1_clients"]["p50_ms"] / plain["1_clients"]["p50_ms"], 2),
        "route_throughput_direct_vs_plain_16_clients (goal >= 0.8)": round(
            serve["route_load_direct"]["16_clients"]["req_per_s"] / plain["16_clients"]["req_per_s"], 2),
        "route_p50_via_proxy_vs_plain_1_client": round(
            serve["route_load"]["1_clients"]["p50_ms"] / plain["1_clients"]["p50_ms"], 2),
        "route_throughput_via_proxy_vs_plain_16_clients": round(
            serve["route_load"]["16_clients"]["req_per_s"] / plain["16_clients"]["req_per_s"], 2),
        "tiny_answer_alternating_rounds_vs_in_process (goal <= 1.05)":
            serve["served_vs_alone_rounds"]["answer_served_vs_alone_p50"],
        "tiny_answer_direct_ingress_vs_in_process": round(
            serve["tiny_answer_via_direct_ingress"]["p50_ms"] / serve["tiny_answer_direct"]["p50_ms"], 2),
        "tiny_answer_via_proxy_vs_in_process": round(
            serve["tiny_answer_via_ensemble"]["p50_ms"] / serve["tiny_answer_direct"]["p50_ms"], 2),
        "tokens_alternating_rounds_vs_raw_4_streams (goal >= 0.9)":
            serve["served_vs_alone_rounds"]["tokens_served_vs_alone_4_streams"],
        "tokens_served_vs_raw_4_streams": serve["served_vs_raw_tokens_4_streams"],
        "logging_on_vs_off_p50 (goal <= 1.05)": serve["logging_on_vs_off_p50"],
        "batched_decisions_per_s (goal >= 2000)": results["in_process"]["decisions_per_s"]["batched_32"],
        "batched_vs_one_at_a_time_decisions": results["in_process"]["decisions_per_s"]["batched_vs_one"],
        "batched_decisions_per_s_static_encoder_router (goal >= 2000)":
            results["in_process"]["static_encoder"]["decisions_per_s"]["batched_32"],
        "cold_start_s (goal <= 15)": serve["cold_start_s"],
        "pss_gib (goal <= 4)": serve["memory"]["pss_gib"]}
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
