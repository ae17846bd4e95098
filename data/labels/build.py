"""Build data/labels/prompts.jsonl: the prompt set behind the default ensemble's outcome table.

Mixed so that each model has work it is the right choice for:
- code: HumanEval (OpenAI, MIT; data/seed/HumanEval.jsonl.gz) and plain-language code requests with unit tests;
- math: GSM8K test (data/routellm/gsm8k/test.jsonl), final number as reference;
- chat, open questions: chatterbot-corpus trivia/science/history/computers with reference answers (BSD-3);
- chat, small talk: greetings and small talk (hand-written, plus chatterbot greetings/conversations openers).
It extends data/seed/prompts.jsonl (same ids and texts), so labels made for the seed set are reused.

Run: python data/labels/build.py   (deterministic: seed 11)
"""
import gzip
import json
import random
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "seed"))
DATA = HERE.parent
SEED = 11
SIZES = {"humaneval": 40, "gsm8k": 30, "open": 40, "small_talk_extra": 10}
MAX_TOKENS = {"code": 400, "math": 512, "chat": 64, "open": 128}
OPEN_FILES = {"trivia": 26, "science": 6, "history": 4, "computers": 4}


def seed_rows() -> list[dict]:
    return [json.loads(line) for line in (DATA / "seed" / "prompts.jsonl").open()]


def chatterbot(name: str) -> list[list[str]]:
    return yaml.safe_load((HERE / "chatterbot" / f"{name}.yml").read_text())["conversations"]


def main() -> None:
    rng = random.Random(SEED)
    rows = seed_rows()
    have = {r["sample_id"] for r in rows}
    # more HumanEval problems, beyond the seed set's 30
    humaneval = [json.loads(line) for line in gzip.open(DATA / "seed" / "HumanEval.jsonl.gz", "rt")]
    fresh = [h for h in humaneval if h["task_id"].replace("/", "-").lower() not in have]
    from build_seed import code_prompt  # noqa: E402  (the seed builder's prompt format)
    for item in rng.sample(fresh, SIZES["humaneval"] - sum(r["eval_name"] == "humaneval" for r in rows)):
        rows.append({"sample_id": item["task_id"].replace("/", "-").lower(), "eval_name": "humaneval", "task": "code",
                     "prompt": code_prompt(item["prompt"]),
                     "reference": {"prelude": item["prompt"], "entry_point": item["entry_point"],
                                   "test": item["test"] + f"\ncheck({item['entry_point']})\n"}})
    # open questions with reference answers
    for name, n in OPEN_FILES.items():
        pairs = [c for c in chatterbot(name) if len(c) >= 2 and len(c[0]) > 12]
        for i, (q, a, *_) in enumerate(rng.sample(pairs, n)):
            rows.append({"sample_id": f"chatterbot-{name}-{i}", "eval_name": f"chatterbot-{name}", "task": "chat",
                         "prompt": q.strip(), "reference": {"answer": str(a).strip()}, "judge": "open"})
    # more small talk, from chatterbot's greetings and conversation openers
    openers = sorted({c[0].strip() for f in ("greetings", "conversations") for c in chatterbot(f) if c})
    known = {r["prompt"] for r in rows}
    for i, text in enumerate(rng.sample([o for o in openers if o not in known], SIZES["small_talk_extra"])):
        rows.append({"sample_id": f"smalltalk-cb-{i}", "eval_name": "small-talk", "task": "chat", "prompt": text,
                     "reference": None})
    for row in rows:
        row["max_tokens"] = MAX_TOKENS[row.get("judge", row["task"])]
    with open(HERE / "prompts.jsonl", "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    counts = {}
    for r in rows:
        counts[r["eval_name"]] = counts.get(r["eval_name"], 0) + 1
    print(f"wrote {len(rows)} prompts to {HERE / 'prompts.jsonl'}: {counts}")


if __name__ == "__main__":
    main()
