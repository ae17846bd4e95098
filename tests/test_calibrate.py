"""Threshold calibration: the search meets its target, and the YAML edit keeps the file's comments."""
import numpy as np
import pytest

from router.offline.calibrate import search, write_thresholds
from router.policy import load_policy

MODELS = ["small", "large"]
# P(small adequate) separates the rows the small model gets right (0.9) from those it fails (0.2)
PROBS = np.array([[0.9, 1.0], [0.9, 1.0], [0.2, 1.0], [0.2, 1.0]])
SCORES = np.array([[1, 1], [1, 1], [0, 1], [0, 0]], dtype=float)
COSTS = np.array([[1, 10]] * 4, dtype=float)


def test_keep_quality_picks_the_cheapest_thresholds_that_keep_it():
    best = search(PROBS, SCORES, COSTS, MODELS, None, keep_quality=0.95)
    # large alone: quality .75 at cost 40; the small model on the two rows it gets right keeps .75 at cost 22
    assert best.met_target and best.quality == pytest.approx(0.75) and best.cost == pytest.approx(22)
    assert 0.2 < best.thresholds["small"] <= 0.9


def test_max_large_share_picks_the_best_quality_within_the_share():
    best = search(PROBS, SCORES, COSTS, MODELS, None, max_large_share=0.0)
    assert best.met_target and best.large_share == 0.0 and best.quality == pytest.approx(0.5)


def test_an_unreachable_target_is_reported():
    assert not search(PROBS, SCORES, COSTS, MODELS, None, keep_quality=1.5).met_target


def test_write_thresholds_in_place_keeps_comments(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text('version: "a"  # keep me\nfallback: qwen2.5-coder-1.5b\nmodels:\n'
                    '  smollm2-135m:\n    tasks: [chat]   # and me\n'
                    '  qwen2.5-coder-0.5b:\n    threshold: 0.5\n  qwen2.5-coder-1.5b: {}\n')
    write_thresholds(path, {"smollm2-135m": 0.35, "qwen2.5-coder-0.5b": 0.7}, version="cal-1")
    text = path.read_text()
    assert "# keep me" in text and "# and me" in text and 'version: "cal-1"' in text
    policy = load_policy(path)
    assert policy.models["smollm2-135m"].threshold == 0.35 and policy.models["qwen2.5-coder-0.5b"].threshold == 0.7


def test_write_thresholds_into_a_serve_config(tmp_path):
    source = (load_policy.__globals__["DEFAULT_POLICY_PATH"]).read_text()
    path = tmp_path / "serve_config.yaml"
    path.write_text(source)
    write_thresholds(path, {"smollm2-135m": 0.45}, version="cal-2")
    assert load_policy(path).models["smollm2-135m"].threshold == 0.45
    assert path.read_text().count("#") == source.count("#")


def test_write_setting_replaces_a_value_or_adds_a_line_above_models(tmp_path):
    from router.offline.calibrate import write_setting

    source = (load_policy.__globals__["DEFAULT_POLICY_PATH"]).read_text()
    path = tmp_path / "serve_config.yaml"
    path.write_text(source)
    write_setting(path, "threshold_on", "advantage")
    assert load_policy(path).threshold_on == "advantage" and path.read_text().count("#") == source.count("#")
    write_setting(path, "threshold_on", "adequacy")
    assert load_policy(path).threshold_on == "adequacy" and path.read_text().count("threshold_on") == 1
    flow = tmp_path / "flow.yaml"
    flow.write_text("{version: v, fallback: qwen2.5-coder-1.5b, models: {qwen2.5-coder-1.5b: {}}}\n")
    with pytest.raises(ValueError, match="block style"):
        write_setting(flow, "threshold_on", "advantage")


def test_calibrate_threshold_on_auto_keeps_the_rule_that_meets_the_target_more_cheaply(tmp_path, capsys):
    """Both rules are searched on the same out-of-fold rows; the file gets the cheaper one, its thresholds and,
    when it changes, its threshold_on line."""
    import json
    import shutil

    from router.cli import main

    path = tmp_path / "serve_config.yaml"
    shutil.copy(load_policy.__globals__["DEFAULT_POLICY_PATH"], path)
    assert main(["calibrate", "--policy", str(path), "--keep-quality", "0.9", "--threshold-on", "auto"]) == 0
    printed = json.loads(capsys.readouterr().out)
    tried = printed["rules_tried"]
    assert set(tried) == {"adequacy", "advantage"} and all(t["met_target"] for t in tried.values())
    cheaper = max(tried, key=lambda r: (tried[r]["cost_saved"], r == "adequacy"))
    assert printed["threshold_on"] == cheaper and load_policy(path).threshold_on == cheaper
    assert tried[cheaper]["cost_saved"] == pytest.approx(printed["cost_saved"])
    with pytest.raises(SystemExit) as refused:  # argparse's own exit for a bad argument
        main(["calibrate", "--policy", str(path), "--keep-quality", "0.9", "--step", "0.7"])
    assert refused.value.code == 2 and "--step" in capsys.readouterr().err
    other = "advantage" if cheaper == "adequacy" else "adequacy"
    assert main(["calibrate", "--policy", str(path), "--keep-quality", "0.9", "--profile", "p",
                 "--threshold-on", other]) == 2
    assert "--profile writes thresholds only" in capsys.readouterr().err
