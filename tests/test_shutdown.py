"""`make run`'s `router up` stopped with SIGTERM: it exits cleanly, prints no crash, and leaves no process of the
Ray cluster it started behind. It takes about 1.5 s on a quiet machine; `ray.shutdown` stops Ray's processes one
kind after another, each given 1 s to exit and 1 s more once killed, so a loaded machine can take over 10 s (11.3 s
once in CI). The bound checks that it never hangs, not how fast it is (speed lives in the benchmarks)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from router.serving.local_ensemble import RAY_ENV, free_port, http_ok, wait_for

pytestmark = pytest.mark.serve
ROOT = Path(__file__).resolve().parent.parent


def _session_processes(sid: int) -> list[str]:
    listing = subprocess.run(["ps", "-eo", "sid=,pid=,args="], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if line.split(None, 1)[0] == str(sid)]


def test_router_up_stops_cleanly_on_sigterm(tmp_path):
    port = free_port()
    log = (tmp_path / "up.log").open("w+")
    env = {**os.environ, **RAY_ENV, "ROUTER_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}"}
    child = subprocess.Popen([sys.executable, "-m", "router.cli", "up", "--port", str(port)], cwd=ROOT, env=env,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # its ready line, not /healthz alone: healthz can turn green a moment before the launcher sees it
        wait_for(lambda: "router: ready at" in (tmp_path / "up.log").read_text() or child.poll() is not None, 900,
                 "router up to print that it is ready")
        assert http_ok(f"http://127.0.0.1:{port}/healthz")
        assert child.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
        assert _session_processes(child.pid), "the cluster's processes are in the launcher's session"
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        code = child.wait(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    output = (tmp_path / "up.log").read_text()
    assert code == 0 and elapsed < 30, (code, elapsed, output[-3000:])
    assert "Segmentation fault" not in output and "Traceback" not in output, output[-3000:]
    assert "SIGTERM, shutting down" in output
    wait_for(lambda: not _session_processes(child.pid), 10, "every process of the stopped cluster to exit")
