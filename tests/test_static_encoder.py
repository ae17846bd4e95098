"""The static encoder distilled from the shipped MiniLM (router/static_encoder.py), and routers trained on it:
`router train --encoder`, the artifact naming its encoder, and the routing service following the artifact."""
import json

import numpy as np
import pytest

from models.yaml_source import ConfigError
from router.cli import main
from router.features import Encoder
from router.policy import load_policy
from router.service import RoutingService
from router.static_encoder import StaticEncoder, static_encoder

STATIC = "minilm-l6-v2-static"
CODE = "Write a Python function that returns the n-th Fibonacci number."


@pytest.fixture(scope="module")
def base():
    return Encoder(threads=2)


@pytest.fixture(scope="module")
def static(base):
    return static_encoder(base)  # the default cache, shared with `router train` below


@pytest.fixture(scope="module")
def static_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("static") / "router.json"
    assert main(["train", "--table", "data/outcomes/default.csv", "--out", str(out), "--family", "lr",
                 "--encoder", STATIC]) == 0
    return out


def unit(x):
    return x / np.linalg.norm(x)


def test_a_token_vector_is_minilm_reading_that_token_alone(base, static):
    tokenizer = base.tokenizer
    ids = [tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("python"), tokenizer.token_to_id("[SEP]")]
    alone = base._encode_ids([ids])[0]  # the shipped encoder's mean-pooled, normalised embedding
    assert static.table.shape == (tokenizer.get_vocab_size(), 384)
    assert np.allclose(unit(static.table[ids[1]]), alone, atol=1e-5)


def test_a_prompt_is_the_mean_of_its_token_vectors_and_a_batch_changes_nothing(static):
    texts = [CODE, "", "hello there", "What is the capital of France? " * 3]
    batch = static.encode(texts)
    for text, row in zip(texts, batch):
        ids = static.tokenizer.encode(text, add_special_tokens=False).ids
        expected = unit(static.table[ids].mean(axis=0)) if ids else np.zeros(384)
        assert np.allclose(row, expected, atol=1e-6), text
        assert np.allclose(static.encode([text])[0], row, atol=1e-6)
    assert np.linalg.norm(batch[1]) == 0  # an empty prompt stays a zero vector, never NaN


def test_a_long_prompt_is_cut_where_the_shipped_encoder_cuts_it(static):
    long = " ".join(f"word{i}" for i in range(600))
    ids = static.tokenizer.encode(long, add_special_tokens=False).ids[:static.max_tokens - 2]
    assert np.allclose(static.encode([long])[0], unit(static.table[ids].mean(axis=0)), atol=1e-6)


def test_similar_prompts_are_nearer_than_unrelated_ones(static):
    code, other_code, greeting = static.encode([CODE, "Write a Python function that sorts a list.", "Good morning!"])
    assert code @ other_code > code @ greeting + 0.1


def test_the_table_is_cached_and_a_damaged_cache_is_distilled_again(base, static, tmp_path):
    path = tmp_path / f"{base.fingerprint}.npy"
    np.save(path, np.zeros((3, 384), np.float32))  # the wrong shape: e.g. another vocabulary
    rebuilt = static_encoder(base, tmp_path)
    assert np.allclose(rebuilt.table, static.table, atol=1e-5)
    assert np.load(path).shape == static.table.shape
    written = path.stat().st_mtime_ns
    again = static_encoder(base, tmp_path)
    assert path.stat().st_mtime_ns == written and np.array_equal(again.table, rebuilt.table)
    assert isinstance(again, StaticEncoder) and again.fingerprint != base.fingerprint


def test_train_records_the_encoder_and_the_service_decides_on_it(base, static, static_artifact):
    from router.classifier import AdequacyClassifier, feature_matrix

    clf = AdequacyClassifier.load(static_artifact)
    assert clf.encoder_name == STATIC
    service = RoutingService(encoder=base)
    service.apply_policy({**load_policy().model_dump(mode="json"), "classifier": str(static_artifact)})
    assert service.encoder.name == STATIC and service.encoder.table.shape == static.table.shape
    decision = service.route(CODE, 20)
    tokens = static.count_tokens(CODE)
    expected = clf.predict_proba(feature_matrix(static.encode([CODE]), [tokens]), [CODE])[0]
    small = [m for m in clf.models if m in decision.scores]
    assert [decision.scores[m] for m in small] == pytest.approx([expected[clf.models.index(m)] for m in small])
    minilm = clf.predict_proba(feature_matrix(base.encode([CODE]), [tokens]), [CODE])[0]
    assert not np.allclose(expected, minilm, atol=1e-3)  # the MiniLM rows would have decided otherwise


def test_an_artifact_naming_an_unknown_encoder_is_refused_and_the_old_policy_serves(base, static_artifact, tmp_path):
    data = json.loads(static_artifact.read_text())
    data["metadata"]["features"]["encoder"] = "bert-large"
    other = tmp_path / "bert.json"
    other.write_text(json.dumps(data))
    service = RoutingService(encoder=base)
    shipped = load_policy().model_dump(mode="json")
    service.apply_policy(shipped)
    with pytest.raises(ConfigError, match="bert.json was trained on unknown encoder 'bert-large'"):
        service.apply_policy({**shipped, "classifier": str(other), "version": "bert"})
    assert service.live.policy.version == shipped["version"] and service.encoder is base


def test_a_guard_trained_on_other_embeddings_is_refused(base, static_artifact):
    shipped = load_policy().model_dump(mode="json")
    service = RoutingService(encoder=base)
    guarded = {**shipped, "classifier": str(static_artifact), "guard": {**shipped["guard"], "enabled": True}}
    with pytest.raises(ConfigError, match="the guard reads minilm-l6-v2 embeddings and the router reads "
                                          "minilm-l6-v2-static"):
        service.apply_policy(guarded)


def test_report_trains_and_names_the_encoder_it_was_asked_for(tmp_path):
    assert main(["report", "--data", "data/outcomes/default.csv", "--out", str(tmp_path), "--family", "lr",
                 "--encoder", STATIC, "--robustness-sample", "20"]) == 0
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert report["data"]["encoder"] == STATIC
