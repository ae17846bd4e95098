"""The ensemble serves any router from its artifact, with no code change: a lexical family (TF-IDF) and a router
on the static encoder (`--encoder minilm-l6-v2-static`, which the ingress builds when the artifact names it), each
trained by `router train`, made live by a policy edit, asked through the official client. The decision store keeps
the prompt's embedding from the encoder that routed it, under that encoder's name."""
import copy
import json
import os

import numpy as np
import pytest

from router.serving.local_ensemble import wait_for

pytestmark = pytest.mark.serve

CODE = "Write a Python function that returns the n-th Fibonacci number."


@pytest.mark.parametrize("train_args, family, encoder", [
    (["--family", "tfidf"], "tfidf", "minilm-l6-v2"),
    (["--family", "lr", "--encoder", "minilm-l6-v2-static"], "lr", "minilm-l6-v2-static")])
def test_the_ensemble_serves_a_router_from_its_artifact(ensemble, client, tmp_path, train_args, family, encoder):
    from router.classifier import AdequacyClassifier
    from router.cli import main
    from router.features import Encoder
    from router.service import RoutingService
    from router.store import DecisionStore

    artifact = tmp_path / "router.json"
    assert main(["train", "--table", "data/outcomes/default.csv", "--out", str(artifact), *train_args]) == 0
    assert AdequacyClassifier.load(artifact).family.name == family
    original = ensemble.policy()["policy"]
    edited = {**copy.deepcopy(original), "version": f"{family}-on-{encoder}", "classifier": str(artifact)}
    ensemble.deploy_policy(edited)
    try:
        wait_for(lambda: ensemble.policy()["version"] == edited["version"], 120, f"the {family} router")
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": CODE}], max_tokens=8, temperature=0)
        assert raw.parse().choices[0].message.content.strip()
        served = json.loads(raw.headers["x-router-scores"])
        local = RoutingService(encoder=Encoder(threads=1))
        local.apply_policy(edited)
        assert local.encoder.name == encoder
        expected = local.route(CODE, local.encoder.count_tokens(CODE))
        assert served == pytest.approx({m: round(p, 3) for m, p in expected.scores.items()}, abs=2e-3)
        assert raw.headers["x-router-model"] == raw.parse().model == expected.model
        store = DecisionStore(os.environ["ROUTER_STORE_URL"])  # the same database the ingress writes
        try:
            row = wait_for(lambda: store.decision(raw.headers["x-request-id"]), 30, "the decision in the store")
        finally:
            store.close()
        assert row["prompt_embedding_encoder"] == encoder
        assert np.allclose(np.frombuffer(row["prompt_embedding"], "<f4"), local.encoder.encode([CODE])[0], atol=1e-4)
    finally:
        ensemble.deploy_policy(original)
        wait_for(lambda: ensemble.policy()["version"] == original["version"], 60, "the original policy")
