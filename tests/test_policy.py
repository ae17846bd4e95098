"""Policy files: every bad field named with its line; serve_config.yaml carries the live policy."""
import re
import textwrap
from pathlib import Path

import pytest

from router.cli import main
from router.policy import DEFAULT_POLICY_PATH, load_policy
from router.yaml_source import ConfigError

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
