"""Policy profiles: named sets of thresholds a client picks per request with the model name "auto:NAME" (the
pure part, on the real router), their checks, and `router calibrate --profile` / `router report --policy FILE#NAME`."""
import json
import shutil

import pytest

from models.yaml_source import ConfigError
from router.cli import main
from router.offline.calibrate import write_profile
from router.policy import DEFAULT_POLICY_PATH, is_auto, load_policy, parse_policy, profile_of
from router.service import RouteRequest

SMOL, CODER, LARGE = "smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"
APPLES = "Tom has 3 apples and buys 5 more. How many apples does he have?"  # P(coder adequate) about 0.4


def _policy_data(version: str, **changes) -> dict:
    return {**load_policy(DEFAULT_POLICY_PATH).model_dump(mode="json"), "version": version, **changes}


@pytest.fixture(scope="module")
def service():
    from router.service import RoutingService

    routing = RoutingService()
    routing.apply_policy(_policy_data("profiles", profiles={"open": {SMOL: 0.0, CODER: 0.0},
                                                            "shut": {SMOL: 1.0, CODER: 1.0}, "coder-only": {CODER: 0.0}}))
    return routing


def test_the_model_name_says_which_profile():
    assert [profile_of(m) for m in ("auto", "auto:open", "auto:", SMOL)] == [None, "open", "", None]
    assert [is_auto(m) for m in ("auto", "auto:open", SMOL, "autos")] == [True, True, False, False]


def test_a_profile_decides_with_its_own_thresholds(service):
    plain, opened, shut, coder_only = service.route_many(
        [RouteRequest(APPLES, 16, m) for m in ("auto", "auto:open", "auto:shut", "auto:coder-only")])
    scores = [d for d, _, _ in (plain, opened, shut, coder_only)]
    assert scores[0].scores == scores[1].scores  # one prediction: only the thresholds differ
    assert (scores[0].model, scores[0].profile) == (LARGE, None)
    # math is not the tiny model's task, so the cheapest eligible model at threshold 0 is the coder
    assert (scores[1].model, scores[1].profile, dict(scores[1].thresholds)) == (CODER, "open", {SMOL: 0.0, CODER: 0.0})
    assert (scores[2].model, scores[2].rule, scores[2].profile) == (LARGE, "fallback_no_confident_model", "shut")
    # a model the profile leaves out keeps the policy's own threshold
    assert dict(scores[3].thresholds) == {SMOL: service.live.policy.models[SMOL].threshold, CODER: 0.0}
    assert service.live.policy.models[CODER].threshold > 0  # the live policy itself is unchanged


def test_the_shadow_decides_a_profile_it_has_and_routes_as_auto_one_it_lacks(service):
    service.apply_shadow(_policy_data("shadow", profiles={"open": {SMOL: 1.0, CODER: 1.0}}))
    try:
        (_, _, has), (_, _, lacks) = service.route_many([RouteRequest(APPLES, 16, "auto:open"),
                                                         RouteRequest(APPLES, 16, "auto:shut")])
        assert (has.model, has.profile) == (LARGE, "open") and dict(has.thresholds)[CODER] == 1.0
        assert lacks.profile is None and dict(lacks.thresholds) == {
            m: mp.threshold for m, mp in service.shadow.policy.models.items() if m != LARGE}
    finally:
        service.apply_shadow(None)


@pytest.mark.parametrize("profiles, message", [
    ({"eco": {SMOL: 4}}, r"profiles\.eco\.smollm2-135m: Input should be less than or equal to 1"),
    ({"eco": {"gpt-9": 0.2}}, r"profiles\.eco\.gpt-9: 'gpt-9' is not one of the policy's small models"),
    ({"eco": {LARGE: 0.2}}, r"profiles\.eco\.qwen2\.5-coder-1\.5b: 'qwen2\.5-coder-1\.5b' is not one of the policy's small"),
    ({"Eco Nomy": {SMOL: 0.2}}, r"profiles\.Eco Nomy\.\[key\]: String should match pattern"),
    ({"eco": [0.2]}, r"profiles\.eco: Input should be a valid dictionary"),
], ids=["threshold-above-1", "unknown-model", "the-fallback", "bad-name", "not-a-mapping"])
def test_a_bad_profile_is_refused_naming_it(profiles, message):
    with pytest.raises(ConfigError, match=message):
        parse_policy(_policy_data("bad", profiles=profiles))


def test_write_profile_adds_and_replaces_a_profile_keeping_the_file(tmp_path):
    path = tmp_path / "serve_config.yaml"
    shutil.copy(DEFAULT_POLICY_PATH, path)
    before = load_policy(path)
    write_profile(path, "eco", {SMOL: 0.2, CODER: 0.25})
    write_profile(path, "eco", {SMOL: 0.1, CODER: 0.15})
    after = load_policy(path)
    assert after.profiles["eco"] == {SMOL: 0.1, CODER: 0.15}
    assert {k: v for k, v in after.profiles.items() if k != "eco"} == before.profiles
    assert (after.version, after.models) == (before.version, before.models)
    assert path.read_text().count("# ") == DEFAULT_POLICY_PATH.read_text().count("# ")  # comments kept
    bare = tmp_path / "policy.yaml"
    bare.write_text("version: v\nfallback: qwen2.5-coder-1.5b\nmodels:\n  smollm2-135m: {threshold: 0.5}\n"
                    "  qwen2.5-coder-1.5b: {}\n")
    write_profile(bare, "eco", {SMOL: 0.2})
    assert load_policy(bare).profiles == {"eco": {SMOL: 0.2}}


def test_calibrate_writes_a_profile_and_report_compares_it(tmp_path, capsys):
    path = tmp_path / "serve_config.yaml"
    shutil.copy(DEFAULT_POLICY_PATH, path)
    before = load_policy(path)
    assert main(["calibrate", "--policy", str(path), "--keep-quality", "0.85", "--profile", "cheap"]) == 0
    printed = json.loads(capsys.readouterr().out)
    after = load_policy(path)
    assert printed["profile"] == "cheap" and printed["quality_kept"] >= 0.85 and printed["version"] is None
    assert after.profiles["cheap"] == printed["thresholds"] and after.models == before.models
    assert after.version == before.version
    out = tmp_path / "report"
    assert main(["report", "--data", "data/outcomes/default.csv", "--out", str(out), "--policy", str(path),
                 "--policy", f"{path}#cheap"]) == 0
    plain, cheap = json.loads((out / "default.json").read_text())["what_if"]
    assert cheap["policy"].endswith("#cheap") and cheap["cost"] < plain["cost"]
    capsys.readouterr()
    assert main(["report", "--data", "data/outcomes/default.csv", "--out", str(out), "--policy", f"{path}#nope"]) == 2
    assert "the policy has no profile 'nope'; its profiles are" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # argparse's own exit for a bad argument
        main(["calibrate", "--policy", str(path), "--keep-quality", "0.85", "--profile", "Not A Name"])
    assert refused.value.code == 2 and "'Not A Name' is not a profile name" in capsys.readouterr().err


def test_the_policy_commands_name_the_shipped_profiles(capsys):
    assert main(["policy", "validate", str(DEFAULT_POLICY_PATH)]) == 0
    assert main(["policy", "check-config", str(DEFAULT_POLICY_PATH)]) == 0
    validated, checked = capsys.readouterr().out.splitlines()
    assert validated.endswith("profiles quality, economy)") and checked.endswith("profiles quality, economy)")
