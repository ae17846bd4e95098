"""Start the ensemble on a private local Ray cluster bound to 127.0.0.1, deployed from serve_config.yaml
through Serve's REST API (what `serve deploy` does). Used by the tests and the benchmarks."""
from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from router.serving.direct_ingress import direct_urls, use_direct_ingress
from router.serving.live import ServeRefused, config_with_policy, deploy_config
from router.policy import PROJECT_ROOT

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           # under load on 2 cores the HTTP proxy can need more than the default 5 s to report ready
           "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "30"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")


def deploy_first_config(config: dict, dashboard: str, attempts: int = 4) -> None:
    """The first config on a fresh cluster: a 5xx there can be Serve's controller still starting (seen once in a
    test run: a 500 with a traceback), so it is tried again a few times; a 4xx is the config's fault at once."""
    for attempt in range(1, attempts + 1):
        try:
            return deploy_config(config, dashboard)
        except ServeRefused as exc:
            if exc.status < 500 or attempt == attempts:
                raise
            time.sleep(2 * attempt)


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


def serve_config(port: int, path: Path = PROJECT_ROOT / "serve_config.yaml") -> dict:
    config = yaml.safe_load(path.read_text())
    config.setdefault("http_options", {})["port"] = port
    return config


@dataclass
class Ensemble:
    base: str
    dashboard: str
    port: int
    started_at: float
    metrics: str = ""  # Ray's Prometheus endpoint for this cluster
    ready_after_s: float = 0.0
    direct: str = ""  # the ingress replica's own HTTP server (direct ingress, unless turned off): no proxy hop

    def direct_urls(self) -> list[str]:
        """Every running ingress replica's direct URL, now (a replaced replica gets a new port)."""
        return direct_urls(self.dashboard, "127.0.0.1")

    def live_direct(self, timeout: float = 120) -> str:
        """A running ingress replica's direct URL that answers /healthz: `direct` until that replica is replaced."""
        return wait_for(lambda: next((u for u in self.direct_urls() if http_ok(f"{u}/healthz")), None), timeout,
                        "an ingress replica's direct port")

    def policy(self) -> dict:
        """GET /v1/policy: the live policy, the refused edit if any, and the replica that answered."""
        return httpx.get(f"{self.base}/v1/policy", timeout=30).json()

    def deploy_policy(self, policy: dict, shadow: dict | None = None) -> None:
        """Redeploy serve_config.yaml with `policy` (and a `shadow` policy, if given) as the ingress's user_config,
        as `serve deploy` would."""
        deploy_config(config_with_policy(serve_config(self.port), policy, shadow), self.dashboard)


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The sum of a metric's samples with these labels in Prometheus text, or None when there are none.
    A counter may be exported as NAME or NAME_total."""
    values = []
    for line in text.splitlines():
        if line.startswith((name + "{", name + "_total{")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            values.append(float(line.rsplit(" ", 1)[1]))
    return sum(values) if values else None


@contextlib.contextmanager
def local_ensemble(ready_timeout: float = 600, port: int | None = None,
                   config_path: Path = PROJECT_ROOT / "serve_config.yaml", num_cpus: int | None = 2,
                   after_ray_init=None):
    """The ensemble on a private Ray cluster: on `port` (default a free one), from `config_path`, with
    `num_cpus` CPUs for Ray's scheduler (2 in tests and benchmarks, as on this machine). `after_ray_init` runs
    right after `ray.init` (the launcher takes its signal handlers back from Ray there)."""
    os.environ.update(RAY_ENV)
    direct = use_direct_ingress()
    import ray

    started = time.perf_counter()
    dashboard_port, http_port, metrics_port = free_port(), port or free_port(), free_port()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=dashboard_port, object_store_memory=80 * 1024**2, log_to_driver=False,
             logging_level="warning", _metrics_export_port=metrics_port)
    if after_ray_init is not None:
        after_ray_init()
    ens = Ensemble(f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{dashboard_port}", http_port, started,
                   metrics=f"http://127.0.0.1:{metrics_port}/metrics")
    try:
        wait_for(lambda: http_ok(f"{ens.dashboard}/api/serve/applications/"), 120, "the Serve REST API")
        deploy_first_config(serve_config(http_port, config_path), ens.dashboard)
        wait_for(lambda: http_ok(f"{ens.base}/healthz"), ready_timeout, "the ensemble to become ready")
        ens.ready_after_s = time.perf_counter() - started
        if direct:
            ens.direct = ens.live_direct()
        yield ens
    finally:
        ray.shutdown()
