"""What Ray's dashboard costs at start and in memory on this machine (issue 16; README "Serving settings, and why").

    .venv/bin/python bench/dashboard_cost.py --out bench     # about 1 minute; writes dashboard_cost.md and .json

The shipped ensemble starts Ray with its dashboard because Serve's REST API lives there (`router up`,
`router policy apply`, direct-ingress discovery and the tests deploy and read through it). In alternating rounds,
each in a fresh child process as `router up` starts Ray (`ray.init(address="local")`, 2 CPUs, 80 MB object store),
this times `ray.init` with the dashboard and without, then sums RSS and PSS over Ray's processes once it has
settled (bench_router.memory_of_ray; this script's own processes are not counted: their names hold no "ray").
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def child(dashboard: bool, settle_s: float) -> dict:
    import ray
    from bench_router import memory_of_ray

    started = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=dashboard, dashboard_host="127.0.0.1",
             object_store_memory=80 * 1024**2, log_to_driver=False, logging_level="warning")
    init_s = time.perf_counter() - started
    time.sleep(settle_s)  # the dashboard's own modules and agent keep starting after ray.init returns
    memory = memory_of_ray()
    ray.shutdown()
    return {"dashboard": dashboard, "init_s": round(init_s, 2), **memory}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder for dashboard_cost.md and .json")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle-s", type=float, default=5.0)
    parser.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child == "on", args.settle_s)))
        return 0
    if args.rounds < 1 or args.settle_s < 0:
        parser.error("--rounds must be at least 1 and --settle-s at least 0")
    if not args.out:
        parser.error("--out is required")
    runs = []
    for _ in range(args.rounds):
        for mode in ("on", "off"):
            done = subprocess.run([sys.executable, __file__, "--child", mode, "--settle-s", str(args.settle_s)],
                                  capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise SystemExit(f"the child with the dashboard {mode} failed:\n{done.stderr[-2000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
    lines = [f"# Ray's dashboard at start (`.venv/bin/python bench/dashboard_cost.py --out bench`, {args.rounds} "
             "alternating rounds)", "", "| dashboard | `ray.init` s | Ray's processes | RSS GiB | PSS GiB |",
             "|---|---|---|---|---|"]
    for on in (True, False):
        mine = [r for r in runs if r["dashboard"] is on]
        cells = [", ".join(str(r[k]) for r in mine) for k in ("init_s", "processes", "rss_gib", "pss_gib")]
        lines.append(f"| {'on' if on else 'off'} | " + " | ".join(cells) + " |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dashboard_cost.json").write_text(json.dumps(runs, indent=1))
    (out / "dashboard_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
