"""Where a cold start's time goes (issue 16): the phases from `ray.init` to a green /healthz, and in each phase
the CPU seconds every kind of process used (sampled from /proc every 0.5 s), so a phase that waits shows up
beside one that computes. Once ready, the ensemble's memory as `make bench` takes it (PSS and RSS, by process).

  .venv/bin/python bench/cold_start.py --runs 3     # about 1.5 minutes; writes bench/cold_start.md and .json
  .venv/bin/python bench/cold_start.py --runs 3 --against warmup=true   # the shipped config against one with
      # that llama.cpp runtime option changed for every model, in alternating rounds; bench/cold_start_warmup.md
"""
from __future__ import annotations

import argparse
import os
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_router import memory_of_ray, replica_pids  # noqa: E402
from bench.cpu_share import cpu_by_process, kind  # noqa: E402
from router.serving import local_ensemble as ensemble_module  # noqa: E402

CORES = os.cpu_count() or 1  # a phase is busy when its core-seconds fill every core for its wall time
PHASES = ("ray.init", "Serve's REST API up", "deploy, until a replica is titled", "replicas load, to /healthz")


def _sample(samples: list, stop: threading.Event, started: float) -> None:
    while not stop.is_set():
        samples.append((time.perf_counter() - started, cpu_by_process()))
        stop.wait(0.5)


def _nearest(samples: list, at: float) -> dict:
    return min(samples, key=lambda s: abs(s[0] - at))[1]


SHIPPED_CONFIG = ensemble_module.PROJECT_ROOT / "serve_config.yaml"


def one_run(config_path: Path = SHIPPED_CONFIG) -> dict:
    """One cold start: the phase boundaries (seconds from the start) and each phase's CPU by kind of process."""
    marks: dict[str, float] = {}
    started = time.perf_counter()
    samples: list = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample, args=(samples, stop, started), daemon=True)
    sampler.start()
    deploy = ensemble_module.deploy_config

    def timed_deploy(config, dashboard):  # the moment the config goes to Serve's REST API
        marks["deploy"] = time.perf_counter() - started
        return deploy(config, dashboard)

    ensemble_module.deploy_config = timed_deploy
    try:
        with ensemble_module.local_ensemble(
                config_path=config_path,
                after_ray_init=lambda: marks.setdefault("ray_init", time.perf_counter() - started)) as ens:
            marks["healthz"] = ens.ready_after_s
            stop.set()  # before the cluster shuts down, so the last sample has every replica's title
            sampler.join()
            samples.append((time.perf_counter() - started, cpu_by_process()))
            memory = memory_of_ray(replica_pids(ens.dashboard))
    finally:
        ensemble_module.deploy_config = deploy
        stop.set()
    # the first model replica's process: its title names the deployment once Serve has started it
    first_replica = next((at for at, procs in samples if at > marks["deploy"]
                          and any("ServeReplica" in cmd for cmd, _ in procs.values())), marks["healthz"])
    bounds = [0.0, marks["ray_init"], marks["deploy"], first_replica, marks["healthz"]]
    # a process's role from its last title: a replica's title changes while it starts (ray::IDLE, then its method)
    titles = {pid: cmd for _, procs in samples for pid, (cmd, _) in procs.items()}
    ray_pids = {pid for _, procs in samples for pid, (cmd, _) in procs.items() if "ray" in cmd}
    phases = []
    for name, a, b in zip(PHASES, bounds, bounds[1:]):
        before, after = _nearest(samples, a), _nearest(samples, b)
        used: dict[str, float] = defaultdict(float)
        for pid, (cmd, cpu) in after.items():
            role = "this script (driver)" if "cold_start.py" in cmd else \
                kind(titles[pid]) if pid in ray_pids else "outside Ray (the machine's own)"
            used[role] += cpu - before.get(pid, (cmd, 0.0))[1]
        core_s = sum(used.values())
        phases.append({"phase": name, "from_s": round(a, 2), "to_s": round(b, 2), "core_s": round(core_s, 2),
                       "busy": round(core_s / (CORES * max(b - a, 1e-9)), 2),
                       "top": {k: round(v, 2) for k, v in sorted(used.items(), key=lambda kv: -kv[1])[:5] if v > 0.05}})
    return {"cold_start_s": round(marks["healthz"], 2), "phases": phases, "memory": memory}


def markdown(runs: list[dict]) -> str:
    lines = ["# Where a cold start's time goes", "",
             f"`.venv/bin/python bench/cold_start.py --runs 3` on this {CORES}-core machine. Each phase's wall time, "
             f"the CPU seconds every process used in it ({CORES} cores give {CORES} core-seconds a second), and the "
             "biggest users. The sampler reads /proc every 0.5 s, so phase edges are good to about half a second.", ""]
    for i, run in enumerate(runs, 1):
        memory = run["memory"]
        lines += [f"## Run {i}: green /healthz after {run['cold_start_s']} s", "",
                  f"Then {memory['pss_gib']} GiB PSS ({memory['rss_gib']} GiB RSS) over {memory['processes']} "
                  "processes; by process: " + ", ".join(f"{k} {v}" for k, v in memory["pss_gib_by_kind"].items()),
                  "",
                  "| phase | from → to (s) | core-s used | CPU busy | biggest users (core-s) |", "|---|---|---|---|---|"]
        for p in run["phases"]:
            top = ", ".join(f"{k} {v}" for k, v in p["top"].items())
            lines.append(f"| {p['phase']} | {p['from_s']} → {p['to_s']} | {p['core_s']} | {p['busy']:.0%} | {top} |")
        lines.append("")
    median = statistics.median(r["cold_start_s"] for r in runs)
    lines += [f"Median cold start: {median} s.", ""]
    return "\n".join(lines)


def variant_config(setting: str, folder: Path) -> tuple[str, Path]:
    """The shipped config with one llama.cpp runtime option (`KEY=VALUE`, VALUE read as YAML) set for every model."""
    from models.runtime_options import RuntimeOptions

    key, sep, raw = setting.partition("=")
    if not sep or key not in RuntimeOptions.model_fields:
        raise SystemExit(f"--against: expected KEY=VALUE with KEY one of {sorted(RuntimeOptions.model_fields)}, "
                         f"got {setting!r}")
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    args = config["applications"][0]["args"]
    args["runtime"] = {**(args.get("runtime") or {}), key: yaml.safe_load(raw)}
    for own in (args.get("runtime_per_model") or {}).values():
        own.pop(key, None)
    try:  # a bad VALUE is named here, before any cluster starts
        RuntimeOptions.model_validate(args["runtime"])
    except ValueError as exc:
        raise SystemExit(f"--against {setting}: {exc}") from None
    path = folder / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return key, path


def loading_core_s(run: dict) -> float:
    """The core-seconds of a run's last phase, the replicas loading."""
    return next(p["core_s"] for p in run["phases"] if p["phase"] == PHASES[-1])


def compared(shipped: list[dict], variant: list[dict], setting: str) -> str:
    lines = ["# Cold start: the shipped config against one runtime option changed", "",
             f"`.venv/bin/python bench/cold_start.py --runs {len(shipped)} --against {setting}`: cold starts in "
             f"alternating rounds, the shipped `serve_config.yaml` and the same with `runtime.{setting}` for every "
             "model. Seconds to a green /healthz, and the core-seconds of the last phase (the replicas load).", "",
             f"| round | shipped: cold start s | its loading core-s | {setting}: cold start s | its loading core-s |",
             "|---|---|---|---|---|"]
    for i, (a, b) in enumerate(zip(shipped, variant), 1):
        lines.append(f"| {i} | {a['cold_start_s']} | {loading_core_s(a)} | {b['cold_start_s']} | {loading_core_s(b)} |")
    med = statistics.median
    lines += [f"| median | {med(r['cold_start_s'] for r in shipped)} | {med(map(loading_core_s, shipped))} | "
              f"{med(r['cold_start_s'] for r in variant)} | {med(map(loading_core_s, variant))} |", "",
              "The shipped config's runs, phase by phase:", "", markdown(shipped).split("\n", 4)[4],
              f"The runs with {setting}:", "", markdown(variant).split("\n", 4)[4]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="cold starts to measure, one after another")
    parser.add_argument("--out", default="bench", help="folder for cold_start.md and cold_start.json")
    parser.add_argument("--against", metavar="KEY=VALUE", help="also start, in alternating rounds, the shipped "
                        "config with this llama.cpp runtime option for every model (e.g. warmup=true)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    out = Path(args.out)
    if args.against:
        with tempfile.TemporaryDirectory() as folder:
            key, variant_path = variant_config(args.against, Path(folder))
            shipped, variant = [], []
            for i in range(args.runs):  # alternate which arm goes first, so neither always starts on a warm host
                for arm in ("shipped", "variant") if i % 2 == 0 else ("variant", "shipped"):
                    if arm == "shipped":
                        shipped.append(one_run())
                    else:
                        variant.append(one_run(variant_path))
        out.mkdir(parents=True, exist_ok=True)
        runs = {"against": args.against, "shipped": shipped, "variant": variant}
        (out / f"cold_start_{key}.json").write_text(json.dumps(runs, indent=1) + "\n")
        (out / f"cold_start_{key}.md").write_text(compared(shipped, variant, args.against))
        print(compared(shipped, variant, args.against))
        return
    runs = [one_run() for _ in range(args.runs)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "cold_start.json").write_text(json.dumps(runs, indent=1) + "\n")
    (out / "cold_start.md").write_text(markdown(runs))
    print(markdown(runs))


if __name__ == "__main__":
    main()
