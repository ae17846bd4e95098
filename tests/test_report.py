"""`router report` on RouteLLM's public MMLU outcomes: trains on a split, beats random on the held-out split."""
import json

import pytest

from router.cli import main


def test_report_on_routellm_mmlu_beats_random(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", "--data", "routellm:mmlu", "--limit", "2000", "--out", str(out), "--seed", "0"]) == 0
    report = json.loads((out / "routellm-mmlu.json").read_text())
    trained, random = report["routers"]["trained"], report["routers"]["random"]
    assert trained["apgr"] > random["apgr"]
    assert 0.0 < trained["cpt50"] < 100.0 and trained["cpt50"] <= trained["cpt80"]
    op = trained["operating_point"]
    assert abs(op["accuracy"] + op["over_routing"] + op["under_routing"] - 1.0) < 1e-9
    assert set(op["shares"]) == {"mixtral-8x7b", "gpt-4-1106"} and abs(sum(op["shares"].values()) - 1) < 1e-9
    assert 0 < op["cost_saved"] < 1 and 0 < op["quality_kept"] <= 1.2
    assert report["data"]["train_rows"] > 0 and report["n_test"] > 500
    html = (out / "routellm-mmlu.html").read_text()
    assert "<img" in html and "APGR" in html and "random" in html
    assert (out / "routellm-mmlu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_refuses_unknown_data(tmp_path, capsys):
    assert main(["report", "--data", "routellm:nope", "--out", str(tmp_path)]) == 2
    assert "unknown RouteLLM benchmark 'nope'" in capsys.readouterr().err


def test_trained_router_beats_random_on_held_out_default_ensemble_data(tmp_path):
    out = tmp_path / "default"
    assert main(["report", "--data", "data/outcomes/default.csv", "--policy", "serve_config.yaml",
                 "--out", str(out), "--seed", "0", "--gadgets"]) == 0
    report = json.loads((out / "default.json").read_text())
    trained, random = report["routers"]["trained"], report["routers"]["random"]
    assert trained["apgr"] > random["apgr"]
    # the robustness section's routing gadgets: a search in each direction, and the held-out decisions it flips
    up, down = report["robustness"]["gadgets"]
    assert (up["direction"], down["direction"]) == ("up", "down") and len(up["gadget"].split()) == 10
    assert 0 <= up["up"] <= 1 and 0 <= down["down"] <= 1 and up["clean_small"] + up["clean_large"] > 0
    assert "Routing gadgets" in (out / "default.html").read_text()
    # each point of the curve names the policy that serves it (threshold_on: advantage, one threshold)
    curve = trained["curve"]
    assert all(p["standing_threshold"] == pytest.approx((1 - p["threshold"]) / 2) for p in curve)
    assert [p["strong_pct"] for p in curve] == sorted((p["strong_pct"] for p in curve), reverse=True)
    assert "Trade-off curve" in (out / "default.html").read_text()
    # at the same share of large-model calls, the trained router keeps more quality
    assert trained["operating_point"]["quality"] > random["operating_point"]["quality"]
    assert set(report["single_models"]) == {"smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    assert report["oracle"]["quality"] >= max(s["quality"] for s in report["single_models"].values())


def test_policy_what_if_aiq_and_calibration(tmp_path):
    import re

    strict = tmp_path / "strict.yaml"
    text = open("serve_config.yaml").read()
    text = re.sub(r"(smollm2-135m:\n(\s+)threshold: [0-9.]+)", r"\1\n\2auto_route: false", text)
    strict.write_text(re.sub(r'version: "[^"]*"', 'version: "no-tiny-model"', text, count=1))
    out = tmp_path / "whatif"
    assert main(["report", "--data", "data/outcomes/default.csv", "--policy", "serve_config.yaml",
                 "--policy", str(strict), "--out", str(out), "--seed", "0"]) == 0
    report = json.loads((out / "default.json").read_text())
    live, no_tiny = report["what_if"]
    assert no_tiny["version"] == "no-tiny-model" and no_tiny["shares"]["smollm2-135m"] == 0.0
    assert live["shares"]["smollm2-135m"] > 0 and live["cost"] < no_tiny["cost"]
    assert live["quality"] == report["routers"]["trained"]["operating_point"]["quality"]
    assert all(0 <= r["aiq"] <= 1 for r in report["routers"].values())
    assert report["routers"]["trained"]["aiq"] > report["routers"]["random"]["aiq"]
    assert all(0 <= c["ece"] <= 1 and c["bins"] for c in report["calibration"].values())
    html = (out / "default.html").read_text()
    assert "Policy what-if" in html and "no-tiny-model" in html and "AIQ" in html and "ECE" in html
    assert "Robustness" in html and 0 <= report["robustness"]["overall"] <= 1 and report["robustness"]["edits"] > 0


def test_report_reads_routellms_csv_layout(tmp_path, capsys):
    source = "data/routellm/mmlu/mmlu_anatomy.csv"
    assert main(["report", "--data", source, "--out", str(tmp_path)]) == 2
    assert "give --model-costs for RouteLLM's layout" in capsys.readouterr().err
    assert main(["report", "--data", source, "--out", str(tmp_path), "--model-costs",
                 "mistralai/Mixtral-8x7B-Instruct-v0.1=0.24", "gpt-4-1106-preview=24.7"]) == 0
    report = json.loads((tmp_path / "mmlu_anatomy.json").read_text())
    assert report["models"] == ["mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"]


def test_apgr_is_undefined_when_both_models_score_the_same_and_the_json_stays_json(tmp_path):
    table = tmp_path / "tie.csv"
    rows = [f"prompt number {i} about {('cats', 'sums', 'loops')[i % 3]},1,0.1,1,1" for i in range(40)]
    table.write_text("prompt,smollm2-135m,smollm2-135m|total_cost,qwen2.5-coder-1.5b,qwen2.5-coder-1.5b|total_cost\n"
                     + "\n".join(rows) + "\n")
    assert main(["report", "--data", str(table), "--out", str(tmp_path / "out"), "--family", "lr"]) == 0

    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")
    # Python writes NaN by default, which strict JSON readers refuse; an undefined metric is null instead
    report = json.loads((tmp_path / "out" / "tie.json").read_text(), parse_constant=refuse)
    assert report["routers"]["trained"]["apgr"] is None and report["routers"]["random"]["apgr_paper"] is None
    assert report["routers"]["trained"]["operating_point"]["quality_kept"] == 1.0
    assert "<td>trained</td><td>undefined</td><td>undefined</td>" in (tmp_path / "out" / "tie.html").read_text()
