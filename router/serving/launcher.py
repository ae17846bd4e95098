"""`router up` (what `make run` runs): the default ensemble on a private local Ray cluster, deployed from
serve_config.yaml through Serve's REST API, until Ctrl-C or SIGTERM, then a clean exit.

`serve run` leaves the shutdown to Ray's atexit handler, which on this machine ended in a segmentation fault
after SIGTERM. Here a signal ends the wait, `ray.shutdown()` stops every process the cluster started, and the
process exits at once (os._exit), so no atexit handler runs after Ray is gone.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path


def run(config_path: Path, port: int | None = None, ready_timeout: float = 900) -> int:
    from router.serving.local_ensemble import local_ensemble

    stop, ready = threading.Event(), threading.Event()
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)
        stop.set()
        if not ready.is_set():  # still starting: leave the start at once; local_ensemble shuts Ray down
            raise KeyboardInterrupt

    def listen() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, on_signal)

    listen()  # now, and again after ray.init (after_ray_init): Ray installs a handler that dumps a stack, exits 15
    code = 0
    try:
        with local_ensemble(ready_timeout=ready_timeout, port=port, config_path=config_path,
                            num_cpus=os.cpu_count(), after_ray_init=listen) as ens:
            ready.set()
            print(f"router: ready at {ens.base} (OpenAI-compatible: {ens.base}/v1) after {ens.ready_after_s:.0f} s; "
                  f"Ctrl-C or SIGTERM stops it", flush=True)
            if ens.direct:
                print(f"router: direct to the ingress replica, without the proxy hop: {ens.direct}/v1 (its port "
                      f"changes when the replica is replaced; Serve's REST API lists it)", flush=True)
            while not stop.wait(1.0):
                pass
            print(f"router: {signal.Signals(received[0]).name}, shutting down", flush=True)
            started = time.monotonic()
        print(f"router: stopped in {time.monotonic() - started:.1f} s", flush=True)
    except KeyboardInterrupt:
        print("router: stopped while starting", flush=True)
        code = 130
    except Exception as exc:  # a bad config or a start that never became ready
        print(f"router up: error: {exc}", file=sys.stderr, flush=True)
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # Ray is already down: skip the atexit handlers that crashed after it
