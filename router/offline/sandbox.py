"""Run model-written code, isolated: no network, no writes outside a scratch directory, bounded memory and time.

It fails closed. The isolation is a fresh user, network, mount and PID namespace (`unshare`, util-linux) in
which `router/offline/sandbox_launcher.py` remounts every filesystem read-only except the scratch directory and sets
the memory limit before it runs the program. If any of that cannot be set up, the code does not run:
`SandboxUnavailable` says why. Running without isolation takes an explicit opt-out (`unsandboxed=True`).
"""
from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

LAUNCHER = Path(__file__).with_name("sandbox_launcher.py")
SETUP_FAILED = 97  # the launcher's exit code when it could not isolate the program (it never ran)
OPT_OUT_FLAG = "--unsafe-run-model-code-without-sandbox"


class SandboxUnavailable(RuntimeError):
    """The isolated sandbox cannot start here, so model-written code is not run."""


@dataclass(frozen=True)
class Sandbox:
    timeout_s: float = 10.0
    memory_mb: int = 1024
    unsandboxed: bool = False  # the opt-out: code runs with the network and the user's files in reach

    def check(self) -> None:
        """Raise SandboxUnavailable unless isolated runs work here (or the opt-out is on)."""
        if not self.unsandboxed:
            problem = _isolation_problem(shutil.which("unshare"), self.memory_mb)
            if problem:
                raise SandboxUnavailable(f"refusing to run model-written code: {problem}. Install util-linux's "
                                         f"unshare and allow unprivileged user namespaces, or pass {OPT_OUT_FLAG}")

    def run(self, program: str) -> subprocess.CompletedProcess:
        """Run a Python program in a fresh scratch directory. Raises SandboxUnavailable or TimeoutExpired."""
        self.check()
        with tempfile.TemporaryDirectory(prefix="judge-") as scratch:
            path = Path(scratch) / "candidate.py"
            path.write_text(program)
            proc = subprocess.run(self._command(scratch, path), cwd=scratch, capture_output=True, text=True,
                                  timeout=self.timeout_s, env={"PATH": "/usr/bin:/bin", "HOME": scratch})
        if proc.returncode == SETUP_FAILED and "sandbox:" in proc.stderr:
            raise SandboxUnavailable(f"refusing to run model-written code: {proc.stderr.strip()[-300:]}")
        return proc

    def _command(self, scratch: str, program: Path) -> list[str]:
        if self.unsandboxed:
            return [sys.executable, "-I", str(program)]
        return _isolated(shutil.which("unshare"), scratch, self.memory_mb) + [str(program)]


def _isolated(unshare: str | None, scratch: str, memory_mb: int) -> list[str]:
    # -r: map us to root in a new user namespace (what lets us mount), -n: no network, -m: own mounts,
    # -p -f --kill-child: own PID namespace, every process dies with it on a timeout
    return [unshare or "unshare", "-rnmpf", "--kill-child", "--propagation", "private",
            sys.executable, "-I", str(LAUNCHER), scratch, str(memory_mb), sys.executable]


@functools.lru_cache(maxsize=8)
def _isolation_problem(unshare: str | None, memory_mb: int) -> str | None:
    """None when an isolated run works here; else why not. Cached per unshare binary: one probe per process."""
    if unshare is None:
        return "no network-isolated sandbox: `unshare` is not on PATH"
    with tempfile.TemporaryDirectory(prefix="judge-probe-") as scratch:
        probe = Path(scratch) / "probe.py"
        probe.write_text("open('written', 'w').write('ok')\n")
        try:
            proc = subprocess.run(_isolated(unshare, scratch, memory_mb) + [str(probe)], capture_output=True,
                                  text=True, timeout=30, cwd=scratch)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"no network-isolated sandbox: {exc}"
        if proc.returncode != 0 or not (Path(scratch) / "written").exists():
            why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            return f"no network-isolated sandbox: {why[:200]}"
    return None
