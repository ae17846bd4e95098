"""Direct ingress's two small rules, without a cluster: which targets in Serve's REST body are ingress replicas
(and at which address to call them), and that an operator's environment wins over the defaults."""
import os

from router.serving.direct_ingress import DIRECT_INGRESS_ENV, replica_urls, use_direct_ingress

# the shape of `GET /api/serve/applications/` (Ray 2.60): one group per app and protocol
BODY = {"target_groups": [
    {"app_name": "router", "protocol": "HTTP", "route_prefix": "/", "targets": [
        {"ip": "10.0.0.7", "port": 30001, "name": "SERVE_REPLICA::router#RouterIngress#b"},
        {"ip": "10.0.0.5", "port": 30000, "name": "SERVE_REPLICA::router#RouterIngress#a"}]},
    {"app_name": "router", "protocol": "gRPC", "targets": [
        {"ip": "10.0.0.5", "port": 40000, "name": "SERVE_REPLICA::router#RouterIngress#a"}]},
    {"app_name": "other", "protocol": "HTTP", "targets": [
        {"ip": "10.0.0.5", "port": 30002, "name": "SERVE_REPLICA::other#Ingress#c"}]}]}


def test_only_the_apps_http_replicas_are_listed_at_the_address_they_listen_on():
    assert replica_urls(BODY, "127.0.0.1") == ["http://127.0.0.1:30000", "http://127.0.0.1:30001"]
    assert replica_urls(BODY, "0.0.0.0") == ["http://10.0.0.5:30000", "http://10.0.0.7:30001"]


def test_while_no_replica_runs_serve_lists_the_proxy_which_is_not_a_direct_port():
    proxy_only = {"target_groups": [{"app_name": "router", "protocol": "HTTP", "targets": [
        {"ip": "10.0.0.5", "port": 8000, "name": "SERVE_CONTROLLER_ACTOR:SERVE_PROXY_ACTOR-node"}]}]}
    assert replica_urls(proxy_only, "127.0.0.1") == [] and replica_urls({}, "127.0.0.1") == []


def test_the_operators_environment_wins_over_the_defaults(monkeypatch):
    for name in DIRECT_INGRESS_ENV:
        monkeypatch.delenv(name, raising=False)
    assert use_direct_ingress()
    assert all(os.environ[k] == v for k, v in DIRECT_INGRESS_ENV.items())
    monkeypatch.setenv("RAY_SERVE_ENABLE_DIRECT_INGRESS", "0")
    monkeypatch.setenv("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "15")
    assert not use_direct_ingress()
    assert os.environ["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "15"
