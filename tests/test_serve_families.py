"""The ensemble serves any router family from its artifact, with no code change: here a lexical one (TF-IDF),
trained by `router train --family tfidf`, made live by a policy edit, asked through the official client."""
import copy
import json

import pytest

from router.serving.local_ensemble import wait_for

pytestmark = pytest.mark.serve

CODE = "Write a Python function that returns the n-th Fibonacci number."


def test_the_ensemble_serves_a_lexical_family_from_its_artifact(ensemble, client, tmp_path):
    from router.classifier import AdequacyClassifier
    from router.cli import main
    from router.features import Encoder
    from router.service import RoutingService

    artifact = tmp_path / "tfidf.json"
    assert main(["train", "--table", "data/outcomes/default.csv", "--out", str(artifact), "--family", "tfidf"]) == 0
    assert AdequacyClassifier.load(artifact).family.name == "tfidf"
    original = ensemble.policy()["policy"]
    lexical = {**copy.deepcopy(original), "version": "lexical-router", "classifier": str(artifact)}
    ensemble.deploy_policy(lexical)
    try:
        wait_for(lambda: ensemble.policy()["version"] == "lexical-router", 60, "the lexical router")
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": CODE}], max_tokens=8, temperature=0)
        assert raw.parse().choices[0].message.content.strip()
        served = json.loads(raw.headers["x-router-scores"])
        local = RoutingService(encoder=Encoder(threads=1))
        local.apply_policy(lexical)
        expected = local.route(CODE, local.encoder.count_tokens(CODE))
        assert served == pytest.approx({m: round(p, 3) for m, p in expected.scores.items()}, abs=2e-3)
        assert raw.headers["x-router-model"] == raw.parse().model == expected.model
    finally:
        ensemble.deploy_policy(original)
        wait_for(lambda: ensemble.policy()["version"] == original["version"], 60, "the original policy")


def test_the_ensemble_serves_a_router_on_the_static_encoder(ensemble, client, tmp_path):
    """A router trained with `--encoder minilm-l6-v2-static` goes live by a policy edit: the ingress builds the
    static encoder the artifact names, and answers with the scores that encoder's features give."""
    from router.cli import main
    from router.features import Encoder
    from router.service import RoutingService

    artifact = tmp_path / "static.json"
    assert main(["train", "--table", "data/outcomes/default.csv", "--out", str(artifact), "--family", "lr",
                 "--encoder", "minilm-l6-v2-static"]) == 0
    original = ensemble.policy()["policy"]
    static = {**copy.deepcopy(original), "version": "static-router", "classifier": str(artifact)}
    ensemble.deploy_policy(static)
    try:
        wait_for(lambda: ensemble.policy()["version"] == "static-router", 120, "the static router")
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": CODE}], max_tokens=8, temperature=0)
        served = json.loads(raw.headers["x-router-scores"])
        local = RoutingService(encoder=Encoder(threads=1))
        local.apply_policy(static)
        assert local.encoder.name == "minilm-l6-v2-static"
        expected = local.route(CODE, local.encoder.count_tokens(CODE))
        assert served == pytest.approx({m: round(p, 3) for m, p in expected.scores.items()}, abs=2e-3)
        assert raw.headers["x-router-model"] == raw.parse().model == expected.model
    finally:
        ensemble.deploy_policy(original)
        wait_for(lambda: ensemble.policy()["version"] == original["version"], 60, "the original policy")
