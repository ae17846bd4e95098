"""`router label` on a tiny prompt set with the real models on Ray: it writes the table, and an interrupted
run resumes where it stopped, without duplicates."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path


from router.serving.local_ensemble import RAY_ENV, wait_for
from router.offline.outcomes import load_outcomes

TINY = [
    {"sample_id": "hi", "task": "chat", "eval_name": "small-talk", "prompt": "Hello there!", "max_tokens": 16},
    {"sample_id": "thanks", "task": "chat", "eval_name": "small-talk", "prompt": "Thanks a lot!", "max_tokens": 16},
    {"sample_id": "rev", "task": "code", "eval_name": "code-requests", "max_tokens": 96,
     "prompt": "Write a Python function reverse_string(s) that returns the string reversed. Only the code.",
     "reference": {"prelude": "", "entry_point": "reverse_string", "test": "assert reverse_string('abc') == 'cba'\n"}},
    {"sample_id": "add", "task": "math", "eval_name": "math", "max_tokens": 48,
     "prompt": "Tom has 3 apples and buys 4 more. How many apples does he have? Answer with the number only.",
     "reference": {"number": "7"}},
    {"sample_id": "capital", "task": "chat", "eval_name": "open", "judge": "open", "max_tokens": 24,
     "prompt": "What is the capital of France?", "reference": {"answer": "Paris"}},
    {"sample_id": "bye", "task": "chat", "eval_name": "small-talk", "prompt": "Bye, see you!", "max_tokens": 16},
]
MODELS = ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]


def run_label(prompts: Path, out: Path, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "router.cli", "label", "--prompts", str(prompts), "--out", str(out), "--per-model", "1"]
    return subprocess.Popen(cmd, env={**os.environ, **RAY_ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def log_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.strip()] if log.exists() else []


def test_label_is_resumable_after_an_interruption(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in TINY))
    out = tmp_path / "outcomes.csv"
    log = tmp_path / "outcomes.log.jsonl"

    first = run_label(prompts, out, start_new_session=True)
    wait_for(lambda: len(log_lines(log)) >= 4 or first.poll() is not None, 600, "some answers to be logged", 0.2)
    os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C does
    first.communicate(timeout=120)
    before = log_lines(log)
    assert 4 <= len(before) < len(TINY) * len(MODELS), "the run was not interrupted midway"
    assert not out.exists()

    second = run_label(prompts, out)
    _, err = second.communicate(timeout=900)
    assert second.returncode == 0, err[-2000:]
    after = log_lines(log)
    assert after[:len(before)] == before  # answers made before the interruption were kept, not redone
    pairs = [(json.loads(x)["sample_id"], json.loads(x)["model"]) for x in after]
    assert len(pairs) == len(set(pairs)) == len(TINY) * len(MODELS)

    table = load_outcomes(out, known_models=MODELS)
    assert table.frame["sample_id"].tolist() == [p["sample_id"] for p in TINY]
    assert set(table.models) == set(MODELS)
    for m in MODELS:
        for column in (m, f"{m}|total_cost", f"{m}|model_response", f"{m}|input_tokens", f"{m}|output_tokens",
                       f"{m}|latency_s"):
            assert column in table.frame.columns
    assert "oracle_model_to_route_to" in table.frame.columns
    graded = [json.loads(x) for x in after if json.loads(x)["sample_id"] == "capital"]
    assert all(e["verdict"].startswith(("grade", "grader reply")) and e["grader"]["reply"] for e in graded)

    # running it again changes nothing: same table, no new answers
    snapshot = out.read_bytes()
    third = run_label(prompts, out)
    assert third.wait(timeout=300) == 0
    assert log_lines(log) == after and out.read_bytes() == snapshot


def test_label_refuses_a_bad_prompt_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sample_id": "a", "prompt": "x", "task": "poetry"}\n')
    proc = subprocess.run([sys.executable, "-m", "router.cli", "label", "--prompts", str(bad), "--out",
                           str(tmp_path / "o.csv")], capture_output=True, text=True)
    assert proc.returncode == 2 and "bad.jsonl:1: unknown task 'poetry'" in proc.stderr
