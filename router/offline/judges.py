"""Judges: decide whether a model's answer to a prompt is adequate (score 1.0) or not (0.0).

- code: run the answer against the task's unit tests in the sandbox (router/offline/sandbox.py: no network, no writes
  outside a scratch directory, bounded memory and time; it refuses to run code when it cannot isolate it);
- math: exact match on the final number;
- chat (small talk): a non-empty, short, plain-language reply;
- open questions: the large model grades the answer against the reference on a fixed rubric
  (router/rubrics/open_question.txt); grade 4 or 5 is adequate, and the answer must also contain the
  reference's content words. The second check is there because the 1.5B grader is lenient: on an audit of
  its grades it gave 5/5 to answers naming a different fact. Audit the verdicts in the label log.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from router.offline.sandbox import Sandbox, SandboxUnavailable

_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", re.S)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass
class Verdict:
    score: float | None  # None: no verdict (the code judge refused to run the code); `reason` says why
    reason: str


def extract_code(answer: str) -> str:
    blocks = _FENCE.findall(answer)
    if blocks:
        return max(blocks, key=len)
    unterminated = re.search(r"```(?:python|py)?[ \t]*\n(.*)", answer, re.S)  # cut off by max_tokens
    return unterminated.group(1) if unterminated else answer


def judge_code(answer: str, reference: dict, sandbox: Sandbox | None = None) -> Verdict:
    """Run the answer against the reference's tests in the sandbox. If the sandbox cannot isolate the code,
    nothing runs and the verdict (score None: no verdict) says why."""
    sandbox = sandbox or Sandbox()
    code = extract_code(answer)
    entry = reference["entry_point"]
    if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.M):
        program = reference.get("prelude", "") + "\n" + code
    else:  # the answer is only the function body: continue the stub
        program = reference.get("prelude", "") + code
    program += "\n\n" + reference["test"]
    try:
        proc = sandbox.run(program)
    except subprocess.TimeoutExpired:
        return Verdict(0.0, f"timed out after {sandbox.timeout_s:g}s")
    except SandboxUnavailable as exc:
        return Verdict(None, str(exc))
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


RUBRIC = (Path(__file__).parents[1] / "rubrics" / "open_question.txt").read_text()
ADEQUATE_GRADE = 4


def grading_prompt(question: str, reference: dict, answer: str) -> str:
    return RUBRIC.format(question=question.strip(), reference=reference["answer"].strip(),
                         answer=answer.strip() or "(empty)")


def parse_grade(reply: str) -> Verdict:
    found = re.findall(r"Grade:\s*\**\s*([1-5])", reply) or re.findall(r"\b([1-5])\s*/\s*5\b", reply)
    if not found:
        return Verdict(0.0, f"grader reply has no grade: {reply.strip()[:120]!r}")
    grade = int(found[-1])  # the last one: the reply may discuss the rubric before grading
    return Verdict(1.0 if grade >= ADEQUATE_GRADE else 0.0, f"grade {grade}/5")


_STOP = {"a", "an", "the", "of", "and", "or", "in", "on", "to", "is", "it", "its", "was", "are", "be", "by", "for",
         "with", "as", "at", "that", "this", "i", "you", "s", "from"}


def _content_stems(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {w[:5] for w in words if w not in _STOP and (len(w) > 1 or w.isdigit())}


def reference_match(answer: str, reference: str) -> float:
    """Share of the reference's content words (5-letter stems) that the answer contains."""
    wanted = _content_stems(reference)
    return len(wanted & _content_stems(answer)) / len(wanted) if wanted else 0.0


def judge_open(answer: str, reference: dict, grader_reply: str) -> Verdict:
    graded = parse_grade(grader_reply)
    overlap = reference_match(answer, reference["answer"])
    has_grade = graded.reason.startswith("grade ")  # not "grader reply has no grade"
    ok = overlap >= 0.5 and (graded.score == 1.0 or not has_grade)
    why = graded.reason if has_grade else "no grade from the grader"
    return Verdict(1.0 if ok else 0.0, f"{why}; reference words found {overlap:.0%}")


JUDGES = {"code": judge_code, "math": judge_math, "chat": judge_small_talk}


def judge(task: str, answer: str, reference, sandbox: Sandbox | None = None) -> Verdict:
    if task not in JUDGES:
        raise ValueError(f"no judge for task {task!r}; known: {sorted(JUDGES)}")
    if task == "code":
        return judge_code(answer, reference, sandbox)
    return JUDGES[task](answer, reference)
