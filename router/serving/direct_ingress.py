"""Direct ingress: a client calls the ingress replica's own HTTP server and skips the hop through Serve's proxy.

On this machine that hop is most of the route path: `POST /v1/route` p50 about 3x plain FastAPI through the proxy,
1.2-1.5x direct (README "Serving settings, and why"; `make bench`). Serve gives every ingress replica a port of
its own (30000-31000 unless RAY_SERVE_DIRECT_INGRESS_MIN/MAX_HTTP_PORT say otherwise) and lists them in its REST
API's target groups, which is where a load balancer in front of a cluster finds them. The proxy on
`http_options.port` keeps serving as well: the one address that never moves, for clients that track no replicas.
"""
from __future__ import annotations

import os

import httpx

# Ray reads these when its processes start, so they go into the environment before ray.init (or `ray start`).
DIRECT_INGRESS_ENV = {
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    # a stopping ingress replica keeps its port open this long so that a load balancer can drop it (Ray's default
    # is 30 s); nothing polls the target groups on one machine, and every ingress restart would wait out the 30 s
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}
REPLICA_TARGET = "SERVE_REPLICA::"  # with no running ingress replica Serve lists the proxy instead


def use_direct_ingress() -> bool:
    """Direct ingress on unless the environment says otherwise (RAY_SERVE_ENABLE_DIRECT_INGRESS=0 turns it off,
    an operator's draining period stays): call before Ray starts its processes."""
    for name, value in DIRECT_INGRESS_ENV.items():
        os.environ.setdefault(name, value)
    return os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"


def direct_urls(dashboard: str, host: str, app: str = "router") -> list[str]:
    """The base URL of each running ingress replica of `app`, from Serve's REST API (empty while none runs)."""
    return replica_urls(httpx.get(f"{dashboard}/api/serve/applications/", timeout=30).json(), host, app)


def replica_urls(applications: dict, host: str, app: str = "router") -> list[str]:
    """The ingress replicas' URLs in a `GET /api/serve/applications/` body. `host` is `http_options.host`: a replica
    listens there, so a loopback host is used as is; on a cluster that listens on every interface, the target's
    own node address is the one to call."""
    urls = []
    for group in applications.get("target_groups") or []:
        if group.get("app_name") != app or group.get("protocol") != "HTTP":
            continue
        for target in group.get("targets") or []:
            if str(target.get("name", "")).startswith(REPLICA_TARGET) and target.get("port"):
                address = host if host.startswith("127.") or host == "localhost" else target["ip"]
                urls.append(f"http://{address}:{target['port']}")
    return sorted(urls)
