"""A model's own llama.cpp options (runtime_per_model) go over the shared ones, for that model only; the shipped
serve_config.yaml runs the tiny model on 1 thread and the others on 2; the app's on/off args are true or false."""
import pytest
import yaml
from pydantic import ValidationError

from models.runtime_options import runtime_for
from router.policy import PROJECT_ROOT


def test_a_models_own_options_go_over_the_shared_ones():
    args = {"runtime": {"threads": 2, "n_parallel": 4}, "runtime_per_model": {"tiny": {"threads": 1}}}
    assert runtime_for(args, "tiny") == {"n_parallel": 4, "slot_context": 4096, "threads": 1, "mmap": False,
                                          "warmup": False, "stream_interval_ms": 0}
    assert runtime_for(args, "other") == {"n_parallel": 4, "slot_context": 4096, "threads": 2, "mmap": False,
                                          "warmup": False, "stream_interval_ms": 0}
    assert runtime_for({}, "any") == {"n_parallel": 2, "slot_context": 4096, "threads": 2, "mmap": False,
                                      "warmup": False, "stream_interval_ms": 0}


def test_an_unknown_or_bad_option_is_refused_by_name():
    with pytest.raises(ValidationError, match="thread"):
        runtime_for({"runtime_per_model": {"tiny": {"thread": 1}}}, "tiny")
    with pytest.raises(ValidationError, match="threads"):
        runtime_for({"runtime": {"threads": 0}}, "tiny")


def test_the_shipped_config_runs_the_tiny_model_on_one_thread():
    args = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())["applications"][0]["args"]
    assert runtime_for(args, "smollm2-135m")["threads"] == 1
    assert {runtime_for(args, m)["threads"] for m in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")} == {2}


def test_the_apps_on_off_args_must_be_true_or_false():
    from router.serving.app import build_app

    # a quoted "false" would read as on; build_app refuses it before anything is deployed
    with pytest.raises(ValueError, match=r"args\.store_text: 1 must be true or false; "
                                         r"args\.store_responses: 'false' must be true or false"):
        build_app({"store_responses": "false", "store_text": 1})


def test_every_option_but_the_replicas_own_reaches_the_llamacpp_backend():
    import inspect

    from models.llamacpp import LlamaCppBackend
    from models.runtime_options import RuntimeOptions, backend_options

    # an option the backend does not take would fail every model replica at start, with a TypeError
    passed = backend_options(RuntimeOptions().model_dump())
    assert "stream_interval_ms" not in passed and "warmup" in passed
    assert set(passed) <= set(inspect.signature(LlamaCppBackend.__init__).parameters)
