"""Monitoring: deploy/prometheus/prometheus.yml is a valid config, every query of the Grafana dashboard parses and
names only metrics that router/serving/telemetry.py defines (with the suffix Prometheus gives its type), and
(marked serve) Debian's real `prometheus` scrapes the router's metrics off the test cluster's Ray endpoint."""
import ast
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import yaml

from router.policy import PROJECT_ROOT

PROMETHEUS_CONFIG = PROJECT_ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "router-dashboard.json"
TELEMETRY = PROJECT_ROOT / "router" / "serving" / "telemetry.py"
# Ray exports each metric as ray_NAME; Prometheus adds these suffixes by type
SUFFIXES = {"Counter": ("_total",), "Histogram": ("_bucket", "_sum", "_count"), "Gauge": ("",)}
METRIC = re.compile(r"\bray_router_[a-z0-9_]+")
# the dashboard's Grafana variables, as a query outside Grafana must spell them
GRAFANA_VARS = {"$__rate_interval": "1m", "$application": ".*"}


def metric_kinds() -> dict[str, str]:
    """telemetry.py's metrics and their types, read off its `metrics.Counter(NAMES["requests"], ...)` calls."""
    from router.serving.telemetry import NAMES

    kinds = {}
    for node in ast.walk(ast.parse(TELEMETRY.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SUFFIXES \
                and node.args and isinstance(node.args[0], ast.Subscript):
            kinds[NAMES[ast.literal_eval(node.args[0].slice)]] = node.func.attr
    assert set(kinds) == set(NAMES.values()), "a metric in NAMES that telemetry.py never makes, or one it makes twice"
    return kinds


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target, rows' panels included, and every templating query."""
    board = json.loads(DASHBOARD.read_text())
    found = []

    def walk(panels):
        for panel in panels:
            found.extend((panel["title"], t["expr"]) for t in panel.get("targets", []))
            walk(panel.get("panels", []))
    walk(board["panels"])
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            found.append((f"variable {var['name']}", query))
    return found


def as_promql(query: str) -> str:
    for var, value in GRAFANA_VARS.items():
        query = query.replace(var, value)
    label_values = re.fullmatch(r"label_values\((.+), *\w+\)", query)  # a Grafana function: its series selector
    return label_values.group(1) if label_values else query


def test_the_prometheus_config_is_valid():
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool missing: apt-get install prometheus (make test does)")
    done = subprocess.run([promtool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_prometheus_config_reads_rays_service_discovery_file():
    from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE

    jobs = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    files = [f for job in jobs for sd in job.get("file_sd_configs", []) for f in sd["files"]]
    assert files == [f"/tmp/ray/{PROMETHEUS_SERVICE_DISCOVERY_FILE}"]  # Ray's default temp dir on the head node


def test_every_dashboard_query_names_only_metrics_telemetry_defines():
    kinds = metric_kinds()
    queries = dashboard_queries()
    exported = {f"ray_{name}{suffix}": name for name, kind in kinds.items() for suffix in SUFFIXES[kind]}
    used = set()
    for where, query in queries:
        names = METRIC.findall(query)
        assert names, f"{where}: {query!r} names no router metric"
        for name in names:
            assert name in exported, f"{where}: {name} is not a name Prometheus gives a metric of telemetry.py " \
                                     f"(ray_ + NAME + its type's suffix): {sorted(exported)}"
            used.add(exported[name])
    assert used == set(kinds), f"metrics with no panel: {sorted(set(kinds) - used)}"
    board = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and all(p["datasource"]["uid"] == "${datasource}" for p in board["panels"])


def test_every_dashboard_query_is_valid_promql(tmp_path):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool missing: apt-get install prometheus (make test does)")
    recorded = [{"record": f"dashboard:query_{i}", "expr": as_promql(query)}
                for i, (_, query) in enumerate(dashboard_queries())]
    rules = {"groups": [{"name": "dashboard", "rules": recorded}]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    done = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def prometheus(ensemble, tmp_path):
    """Debian's prometheus with the shipped config, scraping every second, reading this test cluster's own copy of
    Ray's service-discovery file (the shipped path, /tmp/ray/..., links to the newest cluster's on the machine)."""
    import ray

    from router.serving.local_ensemble import free_port, http_ok, wait_for

    binary = shutil.which("prometheus")
    if not binary:
        pytest.skip("prometheus missing: apt-get install prometheus (make test does)")
    session_dir = Path(ray._private.worker._global_node.get_session_dir_path())
    discovery = session_dir / Path(yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"][0]
                                   ["file_sd_configs"][0]["files"][0]).name
    metrics_port = urlparse(ensemble.metrics).port
    wait_for(lambda: discovery.exists() and f":{metrics_port}\"" in discovery.read_text(), 60,
             f"Ray's service-discovery file {discovery} to list the metrics port {metrics_port}")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["scrape_configs"][0]["file_sd_configs"][0]["files"] = [str(discovery)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                                f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is not None or http_ok(f"{url}/-/ready"), 60, "prometheus to be ready")
        assert process.poll() is None, f"prometheus exited: {(tmp_path / 'prometheus.log').read_text()}"
        yield url, metrics_port
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def query(url: str, promql: str) -> list[dict]:
    reply = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=30).json()
    assert reply["status"] == "success", f"{promql}: {reply}"
    return reply["data"]["result"]


@pytest.mark.serve
def test_prometheus_scrapes_the_routers_metrics_from_ray(prometheus, client):
    from router.serving.local_ensemble import wait_for

    url, metrics_port = prometheus
    for text in ("Hi! How are you today?", "Write a Python function that reverses a string."):
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": text}], max_tokens=8,
                                       temperature=0)

    def scraped():
        targets = httpx.get(f"{url}/api/v1/targets", timeout=30).json()["data"]["activeTargets"]
        return [t for t in targets if t["scrapeUrl"].endswith(f":{metrics_port}/metrics") and t["health"] == "up"]
    wait_for(scraped, 60, f"prometheus to scrape Ray's metrics port {metrics_port}", interval=1)
    def counted():  # Ray exports metrics periodically: a scrape can hold the first answer before the second
        found = query(url, 'ray_router_requests_total{model!=""}')
        return found if sum(float(s["value"][1]) for s in found) >= 2 else None
    series = wait_for(counted, 120, "both answers in ray_router_requests_total in prometheus", interval=2)
    labels = [s["metric"] for s in series]
    assert all({"model", "rule", "stream", "profile", "application", "deployment", "replica"} <= set(m)
               for m in labels), labels
    assert {m["application"] for m in labels} == {"router"} and {m["deployment"] for m in labels} == {"RouterIngress"}
    assert {m["job"] for m in labels} == {"ray"} and {m["stream"] for m in labels} <= {"true", "false"}
    assert sum(float(s["value"][1]) for s in series) >= 2
    # the dashboard's own queries run on the real server; the traffic panels have data
    traffic = ("Requests by model", "Requests by rule", "Decision latency", "Tokens by model",
               "Cost per hour by model", "variable application")

    def panels_with_data():  # rate() needs two samples of each series: wait for the second scrape
        answered = {where: query(url, as_promql(promql)) for where, promql in dashboard_queries()}
        return answered if all(answered[where] for where in traffic) else None
    answered = wait_for(panels_with_data, 60, "data in the dashboard's traffic panels", interval=1)
    assert all(answered[where] for where in traffic)
