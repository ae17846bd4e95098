"""What the router adds in front of a remote model. A second application's fallback, `upstream`, is a remote
catalogue entry (`runtime: openai`) whose server is the first application's tiny model; the baseline is the same
request sent straight to that server, in the same run. The two alternate request by request, so that drift on a
shared machine hits both alike: whole answers (32 tokens) and streamed time to the first token.

    .venv/bin/python bench/remote_hop.py --out bench     # about 2 minutes; writes remote_hop.md and .json
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_router import OVERHEAD_PROMPT, OVERHEAD_TOKENS, percentiles  # noqa: E402

TINY = "smollm2-135m"
ARMS = ("direct", "through_router")


def remote_fallback_app(base_app: dict, server: str, catalogue_file: Path) -> dict:
    """An application whose only model is its fallback `upstream`: the tiny model of the server at `server`."""
    catalogue = yaml.safe_load((Path(__file__).resolve().parent.parent / "models" / "catalogue.yaml").read_text())
    catalogue["models"].append({"name": "upstream", "display_name": f"{TINY} at {server}", "runtime": "openai",
                                "tasks": ["chat"], "context_length": 4096, "cost_per_1k_input": 0.0025,
                                "cost_per_1k_output": 0.01,
                                "endpoint": {"base_url": f"{server}/v1", "model": TINY, "timeout_s": 120}})
    catalogue_file.write_text(yaml.safe_dump(catalogue))
    app = copy.deepcopy(base_app)
    app.update(name="remote", route_prefix="/remote",
               runtime_env={"env_vars": {"ROUTER_CATALOGUE": str(catalogue_file)}})
    app["args"]["models"] = ["upstream"]
    ingress = copy.deepcopy(next(d for d in app["deployments"] if d["name"] == "RouterIngress"))
    ingress["user_config"]["policy"].update(version="remote-hop", fallback="upstream", profiles={},
                                            models={"upstream": {"threshold": 0.0, "timeout_s": 120}})
    app["deployments"] = [ingress, {"name": "upstream", "ray_actor_options": {"num_cpus": 0.1}}]
    return app


def _body(model: str, stream: bool) -> dict:
    return {"model": model, "max_tokens": OVERHEAD_TOKENS, "temperature": 0, "stream": stream,
            "messages": [{"role": "user", "content": OVERHEAD_PROMPT}]}


def whole_answer_ms(http: httpx.Client, url: str, model: str) -> float:
    started = time.perf_counter()
    reply = http.post(f"{url}/v1/chat/completions", json=_body(model, False))
    reply.raise_for_status()
    return (time.perf_counter() - started) * 1000


def first_token_ms(http: httpx.Client, url: str, model: str) -> float:
    started, first = time.perf_counter(), None
    with http.stream("POST", f"{url}/v1/chat/completions", json=_body(model, True)) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():  # read to the end, as a client would
            if first is None and line.startswith("data: {") and '"content":"' in line.replace(" ", ""):
                first = (time.perf_counter() - started) * 1000
    if first is None:
        raise RuntimeError(f"{url}: the stream carried no content")
    return first


def measure(base: str, runs: int) -> dict:
    """Each kind of request `runs` times per arm after two warm-ups, the arms alternating request by request."""
    targets = {"direct": (base, TINY), "through_router": (f"{base}/remote", "upstream")}
    samples: dict = {kind: {arm: [] for arm in ARMS} for kind in ("whole_answer", "first_token")}
    with httpx.Client(timeout=300) as http:
        for i in range(runs + 2):
            for kind, timed in (("whole_answer", whole_answer_ms), ("first_token", first_token_ms)):
                for arm in ARMS if i % 2 == 0 else reversed(ARMS):
                    value = timed(http, *targets[arm])
                    if i >= 2:
                        samples[kind][arm].append(round(value, 3))
    result = {}
    for kind, arms in samples.items():
        stats = {arm: {**percentiles(values), "samples_ms": values} for arm, values in arms.items()}
        through, direct = stats["through_router"]["p50_ms"], stats["direct"]["p50_ms"]
        result[kind] = {**stats, "added_p50_ms": round(through - direct, 1), "ratio_p50": round(through / direct, 3)}
    return result


def render(r: dict) -> str:
    lines = ["# What the router adds in front of a remote model", "",
             f"Command: `.venv/bin/python bench/remote_hop.py --out bench` ({r['machine']}; {r['runs']} requests per "
             "arm and kind, alternating). The remote server is the first application's tiny model through Serve's "
             f"proxy; `through_router` asks a second application whose fallback `upstream` is that server "
             f"(`runtime: openai`). {OVERHEAD_TOKENS} tokens at temperature 0.", "",
             "| request | direct to the server p50 / p99 (ms) | through the router p50 / p99 (ms) | added p50 (ms) "
             "| ratio p50 |", "|---|---|---|---|---|"]
    for kind, label in (("whole_answer", "whole answer"), ("first_token", "streamed, first token")):
        k = r[kind]
        lines.append(f"| {label} | {k['direct']['p50_ms']} / {k['direct']['p99_ms']} | {k['through_router']['p50_ms']}"
                     f" / {k['through_router']['p99_ms']} | {k['added_p50_ms']} | {k['ratio_p50']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for remote_hop.md and .json")
    parser.add_argument("--runs", type=int, default=20, help="requests per arm and kind (default 20)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    from router.serving.live import deploy_config
    from router.serving.local_ensemble import http_ok, local_ensemble, serve_config, wait_for

    with tempfile.TemporaryDirectory() as folder, local_ensemble() as ens:
        base_config = serve_config(ens.port)
        app = remote_fallback_app(base_config["applications"][0], ens.base, Path(folder) / "catalogue.yaml")
        deploy_config({**base_config, "applications": [*base_config["applications"], app]}, ens.dashboard)
        wait_for(lambda: http_ok(f"{ens.base}/remote/healthz"), 300, "the application with the remote fallback")
        result = {"machine": "2 CPU cores, no GPU", "runs": args.runs, **measure(ens.base, args.runs)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "remote_hop.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "remote_hop.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
