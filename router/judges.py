"""Judges: decide whether a model's answer to a prompt is adequate (score 1.0) or not (0.0).

- code: run the answer against the task's unit tests in a subprocess, with a timeout and no network;
- math: exact match on the final number;
- chat (small talk): a non-empty, short, plain-language reply.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

CODE_TIMEOUT_S = 10.0
_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", re.S)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass
class Verdict:
    score: float
    reason: str


def extract_code(answer: str) -> str:
    blocks = _FENCE.findall(answer)
    if blocks:
        return max(blocks, key=len)
    unterminated = re.search(r"```(?:python|py)?[ \t]*\n(.*)", answer, re.S)  # cut off by max_tokens
    return unterminated.group(1) if unterminated else answer


def _sandbox_prefix() -> list[str]:
    # A fresh user+network namespace: the code sees no network interface but loopback-less isolation.
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-rn"]
    return []


def judge_code(answer: str, reference: dict, timeout_s: float = CODE_TIMEOUT_S) -> Verdict:
    code = extract_code(answer)
    entry = reference["entry_point"]
    if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.M):
        program = reference.get("prelude", "") + "\n" + code
    else:  # the answer is only the function body: continue the stub
        program = reference.get("prelude", "") + code
    program += "\n\n" + reference["test"]
    with tempfile.TemporaryDirectory(prefix="judge-") as tmp:
        path = os.path.join(tmp, "candidate.py")
        with open(path, "w") as fh:
            fh.write(program)
        cmd = _sandbox_prefix() + [sys.executable, "-I", path]
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout_s,
                                  env={"PATH": "/usr/bin:/bin", "HOME": tmp})
        except subprocess.TimeoutExpired:
            return Verdict(0.0, f"timed out after {timeout_s:g}s")
    if proc.returncode == 0:
        return Verdict(1.0, "tests passed")
    last = (proc.stderr.strip().splitlines() or ["exit code %d" % proc.returncode])[-1]
    return Verdict(0.0, f"tests failed: {last[:200]}")


def final_number(text: str) -> str | None:
    boxed = re.findall(r"\\boxed\{\s*\\?\$?\s*(-?\d[\d,]*(?:\.\d+)?)", text)
    marked = re.findall(r"(?:####|answer is|Answer:)\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", text, re.I)
    found = boxed or marked or _NUMBER.findall(text)
    return found[-1].replace(",", "") if found else None


def judge_math(answer: str, reference: dict) -> Verdict:
    got = final_number(answer)
    want = reference["number"]
    if got is None:
        return Verdict(0.0, "no number in the answer")
    try:
        ok = abs(float(got) - float(want)) < 1e-6
    except ValueError:
        ok = False
    return Verdict(1.0 if ok else 0.0, f"final number {got}, expected {want}")


def judge_small_talk(answer: str, reference: dict | None = None) -> Verdict:
    text = answer.strip()
    words = text.split()
    if not words:
        return Verdict(0.0, "empty reply")
    if "```" in text:
        return Verdict(0.0, "small talk answered with code")
    if len(words) > 120:
        return Verdict(0.0, f"rambling reply ({len(words)} words)")
    letters = sum(c.isalpha() for c in text) / max(1, len(text))
    if letters < 0.6:
        return Verdict(0.0, "reply is not plain language")
    return Verdict(1.0, "short plain reply")


JUDGES = {"code": judge_code, "math": judge_math, "chat": judge_small_talk}


def judge(task: str, answer: str, reference) -> Verdict:
    try:
        return JUDGES[task](answer, reference)
    except KeyError:
        raise ValueError(f"no judge for task {task!r}; known: {sorted(JUDGES)}") from None
