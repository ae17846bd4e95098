"""A real 2-node Ray cluster on this machine (ray.cluster_utils: each node its own raylet and workers, one GCS),
with the cluster profile deployed through Serve's REST API. Used by the cluster tests and `make soak`.

The nodes declare more logical CPUs than this machine has, so that the profile's honest num_cpus (a model replica
claims its llama.cpp threads) can be scheduled at all; on real nodes Ray reads the true core count."""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from router.policy import PROJECT_ROOT
from router.serving.direct_ingress import direct_urls, use_direct_ingress
from router.serving.local_ensemble import RAY_ENV, deploy_first_config, free_port, http_ok, serve_config, wait_for

CLUSTER_CONFIG = PROJECT_ROOT / "serve_config.cluster.yaml"
APP = "router"
# the head holds the proxy, both ingress replicas (the router_gateway resource), the two specialists and two
# model replicas; the worker up to three model replicas
HEAD = {"num_cpus": 11, "resources": {"router_gateway": 2}}
WORKER = {"num_cpus": 11, "node_ip_address": "127.0.0.1"}  # loopback only, like every node here
OBJECT_STORE = 80 * 1024**2


@dataclass
class ClusterEnsemble:
    base: str
    dashboard: str
    port: int
    cluster: object
    worker: object  # the second node: ray._private.node.Node
    gcs: str = ""
    ready_after_s: float = 0.0

    def replicas(self) -> list[dict]:
        """Every replica of the app: deployment, state, node id, pid and actor name (Serve's REST API)."""
        body = httpx.get(f"{self.dashboard}/api/serve/applications/", timeout=30).json()
        found = []
        for name, dep in (body.get("applications", {}).get(APP, {}).get("deployments") or {}).items():
            for r in dep.get("replicas") or []:
                found.append({"deployment": name, "state": r.get("state"), "node_id": r.get("node_id"),
                              "pid": r.get("pid"), "actor_name": r.get("actor_name")})
        return found

    def direct_urls(self) -> list[str]:
        """Each running ingress replica's own port (direct ingress), as a load balancer in front would find them."""
        return direct_urls(self.dashboard, "127.0.0.1", APP)

    def app_status(self) -> str | None:
        """Serve's status of the app: RUNNING once every deployment has its target replicas running."""
        try:
            body = httpx.get(f"{self.dashboard}/api/serve/applications/", timeout=30).json()
        except (httpx.HTTPError, ValueError):
            return None
        return (body.get("applications", {}).get(APP) or {}).get("status")

    def head_node_id(self) -> str:
        return self.cluster.head_node.node_id

    def kill_worker_node(self) -> None:
        """The second node dies: its raylet and every worker process on it are killed without warning."""
        self.cluster.remove_node(self.worker, allow_graceful=False)

    def restart_worker_node(self) -> None:
        self.worker = self.cluster.add_node(**WORKER, object_store_memory=OBJECT_STORE, gcs_address=self.gcs)


@contextlib.contextmanager
def local_cluster(config_path: Path = CLUSTER_CONFIG, ready_timeout: float = 900, port: int | None = None):
    # Ray rewrites 127.0.0.1 in an address to the machine's own IP, which this sandbox does not let a process
    # reach; with this flag off Ray keeps the loopback address (its name says macOS and Windows, its effect is that)
    os.environ.update(RAY_ENV, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")  # for the processes started from here
    use_direct_ingress()
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    ray_constants.ENABLE_RAY_CLUSTER = False  # Ray read the variable when it was imported, maybe before this

    started = time.perf_counter()
    dashboard_port, http_port, gcs_port = free_port(), port or free_port(), free_port()
    gcs = f"127.0.0.1:{gcs_port}"  # the cluster would advertise the machine's address, which loopback-only tests avoid
    cluster = Cluster(initialize_head=True, head_node_args={
        **HEAD, "gcs_server_port": gcs_port, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": dashboard_port, "object_store_memory": OBJECT_STORE, "node_ip_address": "127.0.0.1"})
    try:
        worker = cluster.add_node(**WORKER, object_store_memory=OBJECT_STORE, gcs_address=gcs)
        ray.init(address=gcs, _node_ip_address="127.0.0.1", log_to_driver=False, logging_level="warning")
        ens = ClusterEnsemble(f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{dashboard_port}", http_port,
                              cluster, worker, gcs)
        wait_for(lambda: http_ok(f"{ens.dashboard}/api/serve/applications/"), 180, "the Serve REST API")
        deploy_first_config(serve_config(http_port, config_path), ens.dashboard)
        wait_for(lambda: http_ok(f"{ens.base}/healthz"), ready_timeout, "the cluster ensemble to become ready", 1)
        # /healthz is green with one ingress replica; the second may still be starting
        wait_for(lambda: ens.app_status() == "RUNNING", ready_timeout, "every replica of the app to run", 1)
        ens.ready_after_s = time.perf_counter() - started
        yield ens
    finally:
        ray.shutdown()
        cluster.shutdown()
