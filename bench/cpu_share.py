"""Where the CPU goes while the ensemble answers (issue 16): CPU seconds per process, from /proc, summed over
20 sequential tiny-model answers, grouped by what each process is (a model replica, the ingress, the proxy,
Ray's own daemons).

  .venv/bin/python bench/cpu_share.py     # prints a table; writes bench/cpu_share.json
"""
from __future__ import annotations

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


def kind(cmd: str) -> str:
    replica = re.search(r"ServeReplica:router:([\w.\-]+)", cmd)
    if replica:
        return f"replica {replica.group(1)}"
    for name in ("ProxyActor", "ServeController", "gcs_server", "raylet", "dashboard", "DashboardAgent",
                 "RuntimeEnvAgent", "log_monitor", "cpu_share"):
        if name in cmd:
            return name
    return "other ray" if "ray" in cmd else "other"


def main() -> None:
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
    used: dict[str, float] = defaultdict(float)
    for pid, (cmd, seconds) in after.items():
        used[kind(cmd)] += seconds - before.get(pid, (cmd, seconds))[1]
    total = sum(used.values())
    rows = sorted(((k, round(v, 2), round(v / total, 3)) for k, v in used.items() if v > 0.005), key=lambda r: -r[1])
    result = {"answers": ANSWERS, "wall_s": round(wall, 2), "cpu_s_total": round(total, 2),
              "cores_busy": round(total / wall, 2), "by_process": rows}
    Path("bench/cpu_share.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
