"""The cluster profile on a real 2-node Ray cluster on this machine (router/serving/local_cluster.py): replicas on
both nodes, an answer from each model, sessions and feedback across the two ingress replicas through one
PostgreSQL store, and `router label --address auto` spreading its model actors over both nodes.
`make test` runs these in a second pytest process, after the single-node ensemble is down."""
import json
import os
import subprocess
import sys
import uuid

import httpx
import pytest
import yaml

from models.runtime_options import runtime_for

from pg_fixture import postgres_server  # noqa: F401  (a fixture)
from router.policy import PROJECT_ROOT
from router.serving.config_check import check_serve_config
from router.serving.local_ensemble import wait_for

MODELS = ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
CODER, CODE = "qwen2.5-coder-0.5b", "Write a Python function that reverses a string."
CLUSTER_YAML = PROJECT_ROOT / "serve_config.cluster.yaml"


def _deployments(path) -> tuple[dict, dict]:
    app = yaml.safe_load(path.read_text())["applications"][0]
    return app["args"], {d["name"]: d for d in app["deployments"]}


def test_the_cluster_profile_serves_the_default_policy_with_honest_cpus():
    args, deployments = _deployments(CLUSTER_YAML)
    _, default = _deployments(PROJECT_ROOT / "serve_config.yaml")
    assert deployments["RouterIngress"]["user_config"] == default["RouterIngress"]["user_config"]
    assert set(deployments) == set(default)
    for model in MODELS:  # a model replica claims the CPUs its llama.cpp threads use
        assert deployments[model]["ray_actor_options"]["num_cpus"] == runtime_for(args, model)["threads"]
    assert deployments["RouterIngress"]["ray_actor_options"]["num_cpus"] == args["encoder_threads"]
    assert deployments["RouterIngress"]["num_replicas"] == 2
    assert "ready to deploy" in check_serve_config(CLUSTER_YAML)


def test_the_cluster_profile_fits_the_cluster_it_is_measured_on():
    """Every replica at its maximum fits the soak's 2 nodes, and every minimum fits one node: otherwise upscaled
    replicas can hold the CPUs a crashed model's replacement needs, and Serve has no priorities between deployments."""
    from router.serving.local_cluster import HEAD, WORKER

    _, deployments = _deployments(CLUSTER_YAML)

    def cpus(limit: str) -> float:
        total = 0.0
        for d in deployments.values():
            scaling = d.get("autoscaling_config") or {}
            total += d["ray_actor_options"]["num_cpus"] * scaling.get(limit, d.get("num_replicas", 1))
        return total

    assert cpus("max_replicas") <= HEAD["num_cpus"] + WORKER["num_cpus"]
    assert cpus("min_replicas") <= min(HEAD["num_cpus"], WORKER["num_cpus"])


@pytest.fixture(scope="module")
def cluster(postgres_server, tmp_path_factory):  # noqa: F811
    name = f"cluster_{uuid.uuid4().hex[:8]}"
    postgres_server.admin(f'CREATE DATABASE "{name}"')
    # every node's workers inherit this: both ingress replicas write to one PostgreSQL store
    os.environ["ROUTER_STORE_URL"] = postgres_server.url(name)
    from router.serving.local_cluster import local_cluster

    try:
        with local_cluster() as ens:
            yield ens
    finally:
        os.environ.pop("ROUTER_STORE_URL", None)


pytestmark = pytest.mark.cluster


def _answer(http, base: str, text: str, session: str, model: str = "auto") -> httpx.Response:
    return http.post(f"{base}/v1/chat/completions", headers={"x-session-id": session},
                     json={"model": model, "max_tokens": 8, "temperature": 0,
                           "messages": [{"role": "user", "content": text}]})


def test_replicas_run_on_both_nodes_and_each_model_answers(cluster):
    replicas = cluster.replicas()
    model_nodes = {r["node_id"] for r in replicas if r["deployment"] in MODELS and r["state"] == "RUNNING"}
    assert len(model_nodes) == 2, replicas
    ingress = [r for r in replicas if r["deployment"] == "RouterIngress" and r["state"] == "RUNNING"]
    assert len(ingress) == 2
    with httpx.Client(timeout=300) as http:
        # direct ingress: each ingress replica also answers on a port of its own, listed for a load balancer
        direct = wait_for(lambda: (lambda urls: urls if len(urls) == 2 else None)(cluster.direct_urls()), 120,
                          "both ingress replicas' direct ports")
        assert {http.get(f"{url}/v1/policy").json()["replica"] for url in direct} == {
            r["actor_name"].rsplit("#", 1)[-1] for r in ingress}
        for model in MODELS:
            reply = _answer(http, cluster.base, "Say hello.", "each-model", model)
            assert reply.status_code == 200, reply.text
            assert reply.headers["x-router-model"] == model
            assert reply.json()["choices"][0]["message"]["content"].strip()


def test_sessions_and_feedback_join_across_the_two_ingress_replicas(cluster):
    with httpx.Client(timeout=300) as http:
        seen: set[str] = set()
        for _ in range(40):
            seen.add(_answer(http, cluster.base, "Hi!", "warm").headers["x-router-replica"])
            if len(seen) == 2:
                break
        assert len(seen) == 2, "requests never reached the second ingress replica"
        code = _answer(http, cluster.base, CODE, "cluster-session")
        assert code.status_code == 200 and code.headers["x-router-model"] == CODER
        answered_by = code.headers["x-router-replica"]

        def on_the_other_replica(request):
            for _ in range(30):
                reply = request()
                if reply.headers.get("x-router-replica") not in (None, answered_by):
                    return reply
            return None

        rated = on_the_other_replica(lambda: http.post(f"{cluster.base}/v1/feedback", json={
            "request_id": code.headers["x-request-id"], "rating": "dislike"}))
        assert rated is not None and rated.status_code == 200 and rated.json()["model"] == CODER
        follow_up = on_the_other_replica(lambda: _answer(http, cluster.base, "Thanks, great!", "cluster-session"))
        assert follow_up is not None and follow_up.status_code == 200
        assert follow_up.headers["x-router-rule"] == "session_floor"
        assert follow_up.headers["x-router-model"] == CODER


def test_label_with_address_auto_spreads_its_models_over_both_nodes(cluster, tmp_path):
    from ray.util.state import list_actors

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(p) for p in [
        {"sample_id": "hi", "task": "chat", "eval_name": "small-talk", "prompt": "Hello there!", "max_tokens": 8},
        {"sample_id": "add", "task": "math", "eval_name": "math", "max_tokens": 24,
         "prompt": "Tom has 3 apples and buys 4 more. How many apples? Answer with the number only.",
         "reference": {"number": "7"}}]) + "\n")
    out = tmp_path / "table.csv"
    done = subprocess.run([sys.executable, "-m", "router.cli", "label", "--prompts", str(prompts), "--out", str(out),
                           "--models", "smollm2-135m", "qwen2.5-coder-0.5b", "--per-model", "1", "--threads", "1",
                           "--address", "auto"], env=os.environ.copy(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.exists()
    actors = list_actors(limit=1000)
    workers = [a for a in actors if a.class_name.endswith("ModelWorker")]
    assert len(workers) == 2, sorted({a.class_name for a in actors})
    assert len({w.node_id for w in workers}) == 2, workers
