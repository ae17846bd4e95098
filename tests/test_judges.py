"""Judges on real cases: HumanEval completions, GSM8K numbers, small talk; the code sandbox."""
import gzip
import json
import socket
import threading
from pathlib import Path

import pytest

from router.offline.judges import final_number, judge

ROOT = Path(__file__).resolve().parent.parent
HUMANEVAL = {r["task_id"]: r for r in map(json.loads, gzip.open(ROOT / "data/seed/HumanEval.jsonl.gz", "rt"))}


def reference(task_id: str) -> dict:
    item = HUMANEVAL[task_id]
    return {"prelude": item["prompt"], "entry_point": item["entry_point"],
            "test": item["test"] + f"\ncheck({item['entry_point']})\n"}


def fenced(code: str) -> str:
    return f"Here you go:\n```python\n{code}\n```\nThis works."


def test_humaneval_correct_completion_passes():
    item = HUMANEVAL["HumanEval/0"]
    assert judge("code", fenced(item["prompt"] + item["canonical_solution"]), reference("HumanEval/0")).score == 1.0


def test_humaneval_body_only_completion_passes():
    item = HUMANEVAL["HumanEval/2"]
    assert judge("code", item["canonical_solution"], reference("HumanEval/2")).score == 1.0


def test_humaneval_wrong_completion_fails():
    wrong = "def has_close_elements(numbers, threshold):\n    return False\n"
    verdict = judge("code", fenced(wrong), reference("HumanEval/0"))
    assert verdict.score == 0.0 and "AssertionError" in verdict.reason


def test_infinite_loop_is_stopped_and_fails():
    from router.offline.judges import judge_code
    from router.offline.sandbox import Sandbox

    verdict = judge_code(fenced("def has_close_elements(n, t):\n    while True: pass"), reference("HumanEval/0"),
                         Sandbox(timeout_s=2))
    assert verdict.score == 0.0 and "timed out" in verdict.reason


def test_code_cannot_reach_the_network():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    code = (f"import socket\ndef f():\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    return 1\n")
    verdict = judge("code", fenced(code), {"prelude": "", "entry_point": "f", "test": "assert f() == 1\n"})
    server.close()
    assert verdict.score == 0.0 and not accepted


@pytest.mark.parametrize("answer,expected", [
    ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n#### 18", "18"),
    ("The answer is $1,234.", "1234"),
    ("So she pays 12.50 dollars", "12.50"),
    ("I don't know", None),
    ("so the total is \\(\\boxed{48}\\) hours, not 50", "48"),
])
def test_final_number(answer, expected):
    assert final_number(answer) == expected


def test_gsm8k_right_and_wrong_numbers():
    assert judge("math", "She makes 9 * 2 = 18 dollars. The answer is 18.", {"number": "18"}).score == 1.0
    assert judge("math", "She makes 9 * 3 = 27 dollars.", {"number": "18"}).score == 0.0


def test_small_talk():
    assert judge("chat", "Hello! How can I help you today?", None).score == 1.0
    assert judge("chat", "   ", None).score == 0.0
    assert judge("chat", "```python\nprint('hi')\n```", None).score == 0.0


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="no judge for task 'poetry'"):
        judge("poetry", "roses", None)


def test_rubric_grade_from_the_large_models_real_reply():
    import asyncio

    from models.backend import GenerationRequest
    from models.registry import make_backend
    from models.catalogue import load_catalogue
    from router.offline.judges import grading_prompt, judge_open, parse_grade
    from router.offline.label import GRADER_MAX_TOKENS

    grader = make_backend(load_catalogue().models[-1])
    question, reference = "What is the capital of France?", {"answer": "Paris"}

    def grade(answer: str):
        reply = asyncio.run(grader.generate(GenerationRequest(
            messages=[{"role": "user", "content": grading_prompt(question, reference, answer)}],
            max_tokens=GRADER_MAX_TOKENS))).text
        return parse_grade(reply), judge_open(answer, reference, reply), reply

    right_grade, right, reply = grade("The capital of France is Paris.")
    assert right_grade.reason.startswith("grade ") and right.score == 1.0, reply
    wrong_grade, wrong, reply = grade("The capital of France is Berlin.")
    assert wrong_grade.reason.startswith("grade ") and wrong.score == 0.0, reply


@pytest.mark.parametrize("answer,reply,score", [
    ("It is the Mona Lisa.", "Comparison: same painting.\nGrade: 5", 1.0),
    ("It is a Spanish folk art painting.", "Grade: 5", 0.0),        # lenient grade, reference not there
    ("Paris is not it; it is Lyon.", "Comparison: different city.\nGrade: 2", 0.0),  # reference word, low grade
    ("The Mona Lisa.", "It matches.", 1.0),                           # no grade: the reference check decides
])
def test_open_question_verdict_needs_grade_and_reference(answer, reply, score):
    from router.offline.judges import judge_open

    reference = {"answer": "Mona Lisa"} if "Paris" not in answer else {"answer": "Paris"}
    assert judge_open(answer, reference, reply).score == score


# --- the sandbox fails closed --------------------------------------------------------------------------------
ADDS = {"prelude": "", "entry_point": "f", "test": "assert f() == 1\n"}


def _no_unshare(monkeypatch, tmp_path, stand_in: str | None = None):
    """PATH without a working unshare. The stand-in script plays a kernel that refuses user namespaces
    (something outside the project), so the probe's refusal path runs for real."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if stand_in is not None:
        fake = bin_dir / "unshare"
        fake.write_text(f"#!/bin/sh\necho '{stand_in}' >&2\nexit 1\n")
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


@pytest.mark.parametrize("stand_in", [None, "unshare: unshare failed: Operation not permitted"],
                         ids=["unshare-missing", "namespaces-refused"])
def test_without_a_sandbox_the_code_judge_refuses_to_run_code(monkeypatch, tmp_path, stand_in):
    from router.offline.judges import judge_code

    marker = tmp_path / "ran"
    _no_unshare(monkeypatch, tmp_path, stand_in)
    code = f"def f():\n    open({str(marker)!r}, 'w').write('x')\n    return 1\n"
    verdict = judge_code(fenced(code), ADDS)
    assert verdict.score is None and "refusing to run model-written code" in verdict.reason
    assert ("not on PATH" if stand_in is None else "Operation not permitted") in verdict.reason
    assert not marker.exists()  # nothing ran


def test_label_stops_before_running_anything_without_a_sandbox(monkeypatch, tmp_path):
    import subprocess
    import sys

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"sample_id": "rev", "task": "code", "prompt": "Reverse a string in Python.",
                                   "reference": {"entry_point": "f", "test": "assert f() == 1\n"}}) + "\n")
    _no_unshare(monkeypatch, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "router.cli", "label", "--prompts", str(prompts), "--out",
                           str(tmp_path / "o.csv")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "router label: error: refusing to run model-written code" in proc.stderr
    assert "--unsafe-run-model-code-without-sandbox" in proc.stderr
    assert not (tmp_path / "o.log.jsonl").exists()  # no model was asked anything


def test_the_opt_out_runs_code_unsandboxed(monkeypatch, tmp_path):
    from router.offline.judges import judge_code
    from router.offline.sandbox import Sandbox

    _no_unshare(monkeypatch, tmp_path)
    assert judge_code(fenced("def f():\n    return 1\n"), ADDS, Sandbox(unsandboxed=True)).score == 1.0


def test_judged_code_writes_only_in_its_scratch_directory(tmp_path):
    outside = tmp_path / "outside.txt"
    code = (f"def f():\n    open('scratch.txt', 'w').write('fine')\n"
            f"    open({str(outside)!r}, 'w').write('escaped')\n    return 1\n")
    verdict = judge("code", fenced(code), ADDS)
    assert verdict.score == 0.0 and "Read-only file system" in verdict.reason
    assert not outside.exists()
    inside_only = "def f():\n    open('scratch.txt', 'w').write('fine')\n    return len(open('scratch.txt').read()) - 3\n"
    assert judge("code", fenced(inside_only), ADDS).score == 1.0


def test_judged_code_gets_no_more_memory_than_the_limit():
    from router.offline.judges import judge_code
    from router.offline.sandbox import Sandbox

    greedy = "def f():\n    block = bytearray(400 * 1024 * 1024)\n    return 1\n"
    assert judge_code(fenced(greedy), ADDS, Sandbox(memory_mb=256)).reason.endswith("MemoryError")
    assert judge_code(fenced(greedy), ADDS, Sandbox(memory_mb=1024)).score == 1.0
