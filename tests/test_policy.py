"""Policy files: every bad field named with its line; serve_config.yaml carries the live policy."""
import re
import textwrap
from pathlib import Path

import pytest

from router.cli import main
from router.policy import DEFAULT_POLICY_PATH, load_policy
from models.yaml_source import ConfigError

GOOD = """\
version: "v2"
fallback: qwen2.5-coder-1.5b
models:
  smollm2-135m:
    threshold: 0.6
    tasks: [chat]
  qwen2.5-coder-1.5b: {}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_default_policy_in_serve_config_is_valid():
    policy = load_policy(DEFAULT_POLICY_PATH)
    assert policy.fallback == "qwen2.5-coder-1.5b"
    assert set(policy.models) == {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}


def test_a_good_policy_file_loads(tmp_path):
    assert load_policy(write(tmp_path, GOOD)).models["smollm2-135m"].threshold == 0.6


def test_every_bad_field_is_named_with_its_line(tmp_path):
    path = write(tmp_path, """\
        version: "bad"
        fallback: gpt-9
        models:
          smollm2-135m:
            threshold: -1
            tasks: [poetry]
          qwen2.5-coder-0.5b:
            thresold: 0.5
          llama-70b: {}
        """)
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    text = str(err.value)
    assert f"{path}:5: models.smollm2-135m.threshold: Input should be greater than or equal to 0" in text
    assert f"{path}:8: models.qwen2.5-coder-0.5b.thresold: Extra inputs are not permitted" in text
    assert f"{path}:6: models.smollm2-135m.tasks.0: unknown task 'poetry'" in text
    assert f"{path}:9: models.llama-70b: unknown model 'llama-70b'" in text
    assert f"{path}:2: fallback: 'gpt-9' must be one of the policy's models" in text
    assert len(err.value.problems) == 5


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "version: 1\nmodels: [unclosed\n")
    with pytest.raises(ConfigError, match=r"policy.yaml:3: not valid YAML"):
        load_policy(path)


def test_cli_validate_exit_codes(tmp_path, capsys):
    assert main(["policy", "validate", str(write(tmp_path, GOOD))]) == 0
    assert "valid policy (version v2" in capsys.readouterr().out
    assert main(["policy", "validate", str(write(tmp_path, "fallback: 3\nmodels: {}\n"))]) == 2
    err = capsys.readouterr().err
    assert "policy.yaml:1: fallback: Input should be a valid string" in err
    assert "policy.yaml:2: models: Dictionary should have at least 1 item" in err


def test_cli_validate_missing_file(capsys):
    assert main(["policy", "validate", "/nonexistent/policy.yaml"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_policy_inside_serve_config_reports_its_own_lines(tmp_path):
    config = re.sub(r"(smollm2-135m:\n\s+threshold:) [0-9.]+", r"\1 high", DEFAULT_POLICY_PATH.read_text())
    path = tmp_path / "serve_config.yaml"
    path.write_text(config)
    line = next(i for i, l in enumerate(config.splitlines(), 1) if "threshold: high" in l)
    with pytest.raises(ConfigError, match=rf"serve_config.yaml:{line}: .*smollm2-135m.threshold"):
        load_policy(path)


def _line(text: str, fragment: str) -> int:
    return next(i for i, l in enumerate(text.splitlines(), 1) if fragment in l)


def test_check_config_passes_the_shipped_serve_config(capsys):
    assert main(["policy", "check-config", str(DEFAULT_POLICY_PATH)]) == 0
    assert "ready to deploy (policy calibrated-" in capsys.readouterr().out


def test_check_config_refuses_a_bad_serve_config_before_deploy(tmp_path, capsys):
    text = DEFAULT_POLICY_PATH.read_text()
    bad = (text.replace("fallback: qwen2.5-coder-1.5b", "fallback: gpt-9")
               .replace("encoder_threads: 2", "encoder_threads: 0")
               .replace("- name: smollm2-135m", "- name: smollm2-136m")
               .replace("    max_ongoing_requests: 64", "    max_ongoing_requests: lots"))
    path = tmp_path / "serve_config.yaml"
    path.write_text(bad)
    assert main(["policy", "check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"serve_config.yaml:{_line(bad, 'fallback: gpt-9')}: fallback: 'gpt-9' must be one of" in err
    assert f":{_line(bad, 'encoder_threads: 0')}: applications.0.args.encoder_threads: 0 must be" in err
    assert f":{_line(bad, 'smollm2-136m')}: applications.0.deployments.1.name: the app has no deployment" in err
    assert f":{_line(bad, 'max_ongoing_requests: lots')}: applications.0.deployments.0.max_ongoing_requests: Input should be" in err


def test_check_config_names_unknown_models_and_a_missing_router_app(tmp_path, capsys):
    text = DEFAULT_POLICY_PATH.read_text().replace("encoder_threads: 2", "encoder_threads: 2\n      models: [llama-70b]")
    path = tmp_path / "serve_config.yaml"
    path.write_text(text)
    assert main(["policy", "check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "applications.0.args.models.0: unknown model 'llama-70b'" in err
    path.write_text(text.replace("router.serving.app:build_app", "elsewhere:app"))
    assert main(["policy", "check-config", str(path)]) == 2
    assert "no application imports router.serving.app:build_app" in capsys.readouterr().err


def test_the_policy_commands_refuse_the_classifier_or_guard_the_ingress_would_refuse(tmp_path, capsys):
    """The files the policy names are read before the config is sent, as the ingress reads them: a missing
    classifier, and an enabled guard whose file is not a guard."""
    not_a_guard = tmp_path / "guard.json"
    not_a_guard.write_text("{}")
    text = DEFAULT_POLICY_PATH.read_text()
    for change, message in [
        (("classifier: data/router/default.json", "classifier: data/router/gone.json"),
         "classifier: .*gone.json: cannot read router artifact"),
        (("            classifier: data/router/default.json\n", "            classifier: data/router/default.json\n"
          f"            guard: {{enabled: true, artifact: {not_a_guard}}}\n"),
         "guard.artifact: .*guard.json: not a gadget guard"),
    ]:
        assert change[0] in text, change[0]
        path = tmp_path / "serve_config.yaml"
        path.write_text(text.replace(*change))
        assert main(["policy", "check-config", str(path)]) == 2
        assert re.search(message, capsys.readouterr().err)
        assert main(["policy", "validate", str(path)]) == 2
        assert re.search(message, capsys.readouterr().err)
        # `router policy apply` refuses it before it reaches the server, which is never asked
        assert main(["policy", "apply", str(path), "--config", str(DEFAULT_POLICY_PATH),
                     "--address", "http://127.0.0.1:9"]) == 2
        assert re.search(message, capsys.readouterr().err)


# --- the last good policy: what the ingress does with a refused policy at start (the pure part) --------------
@pytest.fixture(scope="module")
def service():
    from router.service import RoutingService

    return RoutingService()


def _policy_data(version: str, fallback: str = "qwen2.5-coder-1.5b") -> dict:
    data = load_policy(DEFAULT_POLICY_PATH).model_dump(mode="json")
    return {**data, "version": version, "fallback": fallback}


def test_a_refused_first_policy_with_no_last_good_one_refuses_to_start(service):
    from router.service import RoutingService

    fresh = RoutingService(encoder=service.encoder)
    with pytest.raises(ConfigError, match="fallback: 'gpt-9' must be one of the policy's models"):
        fresh.take(_policy_data("broken", "gpt-9"), lambda: None)
    assert not fresh.has_policy


def test_a_refused_policy_at_start_goes_live_on_the_last_good_one(service):
    from router.service import RoutingService

    fresh = RoutingService(encoder=service.encoder)  # a replica that Serve restarted with a refused edit
    outcome, policy = fresh.take(_policy_data("broken", "gpt-9"), lambda: _policy_data("good"))
    assert (outcome, policy.version) == ("restored", "good") and fresh.live.policy.version == "good"
    assert fresh.refused.version == "broken" and "gpt-9" in fresh.refused.message
    outcome, policy = fresh.take(_policy_data("good-2"), lambda: pytest.fail("not asked for"))
    assert (outcome, policy.version, fresh.refused) == ("applied", "good-2", None)
    outcome, policy = fresh.take(_policy_data("broken-2", "gpt-9"), lambda: pytest.fail("not asked for"))
    assert (outcome, policy.version, fresh.refused.version) == ("refused", "good-2", "broken-2")


def test_a_last_good_policy_that_no_longer_validates_names_both_problems(service):
    from router.service import RoutingService

    fresh = RoutingService(encoder=service.encoder)
    stale = {**_policy_data("old"), "classifier": "data/router/gone.json"}
    with pytest.raises(ConfigError) as err:
        fresh.take(_policy_data("broken", "gpt-9"), lambda: stale)
    assert "gpt-9" in str(err.value) and "last good policy cannot be used" in str(err.value)
    assert not fresh.has_policy


def test_a_model_the_classifier_does_not_score_joins_the_policy_only_when_named(service):
    from models.catalogue import Catalogue
    from router.service import RoutingService

    catalogue = service.catalogue.model_dump(mode="json")
    catalogue["models"].append({"name": "hosted", "display_name": "a hosted model", "runtime": "openai",
                                "tasks": ["chat"], "context_length": 8192,
                                "cost_per_1k_input": 0.0025, "cost_per_1k_output": 0.01,
                                "endpoint": {"base_url": "https://api.example.com/v1", "model": "m"}})
    fresh = RoutingService(encoder=service.encoder, catalogue=Catalogue.model_validate(catalogue))
    data = _policy_data("with-hosted")
    data["models"]["hosted"] = {"threshold": 0.5}
    with pytest.raises(ConfigError, match=r"has no scores for \['hosted'\], which the router may choose; retrain it "
                                          r"with them, or set their auto_route: false"):
        fresh.take(data, lambda: None)
    data["models"]["hosted"]["auto_route"] = False
    assert fresh.take(data, lambda: None)[0] == "applied"
    decision = fresh.route("Name three colours of the rainbow.", 12)
    assert decision.model != "hosted" and "hosted" not in decision.eligible
    assert fresh.route("Name three colours of the rainbow.", 12, model="hosted").model == "hosted"


def test_threshold_on_advantage_needs_the_fallbacks_scores_and_goes_live_by_an_edit(service):
    from models.catalogue import Catalogue
    from router.service import RoutingService

    catalogue = service.catalogue.model_dump(mode="json")
    catalogue["models"].append({"name": "hosted", "display_name": "a hosted model", "runtime": "openai",
                                "tasks": ["chat", "code", "math"], "context_length": 8192,
                                "cost_per_1k_input": 0.0025, "cost_per_1k_output": 0.01,
                                "endpoint": {"base_url": "https://api.example.com/v1", "model": "m"}})
    fresh = RoutingService(encoder=service.encoder, catalogue=Catalogue.model_validate(catalogue))
    data = {**_policy_data("hosted-fallback"), "fallback": "hosted", "threshold_on": "advantage"}
    data["models"] = {**data["models"], "hosted": {"threshold": 0.0}}
    with pytest.raises(ConfigError, match=r"threshold_on: advantage compares each small model with the fallback, "
                                          r"but default.json has no scores for 'hosted'"):
        fresh.take(data, lambda: None)
    assert fresh.take({**data, "threshold_on": "adequacy"}, lambda: None)[0] == "applied"
    assert fresh.take({**_policy_data("advantage"), "threshold_on": "advantage"}, lambda: None)[0] == "applied"
    decision = fresh.route("Name three colours of the rainbow.", 12)
    assert decision.confidence and all(0 <= v <= 1 for v in decision.confidence.values())
    large = decision.scores[fresh.live.policy.fallback]
    assert all(v == pytest.approx((1 + decision.scores[m] - large) / 2) for m, v in decision.confidence.items())


def test_a_cascade_floor_is_refused_on_a_model_whose_server_returns_no_logprobs(service):
    from models.catalogue import Catalogue
    from router.policy import parse_policy

    catalogue = service.catalogue.model_dump(mode="json")
    hosted = {"name": "hosted", "display_name": "a hosted model", "runtime": "openai", "tasks": ["chat"],
              "context_length": 8192, "cost_per_1k_input": 0.0025, "cost_per_1k_output": 0.01,
              "endpoint": {"base_url": "https://api.example.com/v1", "model": "m"}, "logprobs": False}
    catalogue["models"].append(hosted)
    data = _policy_data("floor-on-hosted")
    data["models"]["hosted"] = {"auto_route": False, "cascade_min_logprob": -1.0}
    with pytest.raises(ConfigError, match=r"models\.hosted\.cascade_min_logprob: this model's server returns no "
                                          r"token logprobs \(catalogue: logprobs: false\)"):
        parse_policy(data, "policy", Catalogue.model_validate(catalogue))
    del data["models"]["hosted"]["cascade_min_logprob"]
    assert parse_policy(data, "policy", Catalogue.model_validate(catalogue)).models["hosted"].auto_route is False
    catalogue["models"][0]["logprobs"] = False  # a local llama.cpp model always returns them
    with pytest.raises(ValueError, match="logprobs: false is for a remote model"):
        Catalogue.model_validate(catalogue)


def test_a_threshold_is_a_probability_and_auto_route_takes_a_model_out(tmp_path):
    bad = write(tmp_path, """\
        fallback: qwen2.5-coder-1.5b
        models:
          smollm2-135m:
            threshold: 4
          qwen2.5-coder-1.5b: {}
        """)
    with pytest.raises(ConfigError, match=r":4: models.smollm2-135m.threshold: Input should be less than or equal to 1"):
        load_policy(bad)
    off = write(tmp_path, """\
        fallback: qwen2.5-coder-1.5b
        models:
          smollm2-135m: {auto_route: false}
          qwen2.5-coder-1.5b: {}
        """)
    assert load_policy(off).models["smollm2-135m"].auto_route is False


def test_check_config_refuses_the_specialists_as_deployments(tmp_path, capsys):
    """They run inside the ingress now: a config that still lists one as a deployment is told so."""
    text = DEFAULT_POLICY_PATH.read_text() + "      - name: minilm-l6-v2\n        num_replicas: 1\n"
    path = tmp_path / "serve_config.yaml"
    path.write_text(text)
    assert main(["policy", "check-config", str(path)]) == 2
    assert "the app has no deployment 'minilm-l6-v2'" in capsys.readouterr().err
