"""Build data/labels/prompts.jsonl: the prompt set behind the default ensemble's outcome table.

Mixed so that each model has work it is the right choice for:
- code: HumanEval (OpenAI, MIT; data/seed/HumanEval.jsonl.gz) and plain-language code requests with unit tests;
- math: GSM8K test (data/routellm/gsm8k/test.jsonl), final number as reference;
- chat, open questions: chatterbot-corpus trivia/science/history/computers with reference answers (BSD-3);
- chat, small talk: greetings and small talk (hand-written, plus chatterbot greetings/conversations openers).
It extends data/seed/prompts.jsonl (same ids and texts), so labels made for the seed set are reused, and
`grow` then extends the first 165 prompts to 689 (issue 12: at least 660, at least 150 each of chat, code and
math) without changing them: every remaining HumanEval problem, GSM8K up to 200, every remaining chatterbot
question with a reference answer (the tiny model fails most of them, so the router has something to learn),
and more small talk. The first 165 keep their order, so an outcome log made for them is reused as it is.

Run: python data/labels/build.py   (deterministic: seeds 11 and 12)
"""
import gzip
import json
import random
import re
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
    grow(rows)
    for row in rows:
        row["max_tokens"] = MAX_TOKENS[row.get("judge", row["task"])]
    with open(HERE / "prompts.jsonl", "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    counts = {}
    for r in rows:
        counts[r["eval_name"]] = counts.get(r["eval_name"], 0) + 1
    print(f"wrote {len(rows)} prompts to {HERE / 'prompts.jsonl'}: {counts}")


GROWN = {"gsm8k": 200}
MORE_SMALL_TALK = [
    "Hey, good to see you again!", "How's your day going so far?", "Thanks so much, you're great!",
    "Good morning! Ready for the week?", "Hi! What are you up to?", "Have a great weekend!", "Catch you later!",
    "Hello! How have you been?", "Thanks, that made my day.", "Good night, sleep well!", "Hey! Happy Friday!",
    "Hi there, nice to meet you!", "See you soon, take care!", "Thank you kindly!", "Hello again!",
    "Hope you're doing well today.", "Hey, just checking in.", "Morning! Did you sleep well?",
    "Cheers, have a good one!", "Hi! Lovely weather today, isn't it?", "Thanks for chatting with me!",
    "Hello, friend! How's everything?", "Bye for now!", "Hey, thanks for the quick reply!",
    "Good evening! How was your day?", "Hi! Just saying hi.", "Thanks a million!", "Take care, talk soon!",
    "Hello! It's nice to chat again.", "Hey hey! What's new?",
]


def grow(rows: list[dict]) -> None:
    """Add the issue-12 prompts after the first ones, in a fixed order, from pools they do not use."""
    from build_seed import code_prompt  # noqa: E402

    rng = random.Random(SEED + 1)
    have_ids, have_prompts = {r["sample_id"] for r in rows}, {r["prompt"] for r in rows}
    for item in [json.loads(line) for line in gzip.open(DATA / "seed" / "HumanEval.jsonl.gz", "rt")]:
        sample_id = item["task_id"].replace("/", "-").lower()
        if sample_id not in have_ids:
            rows.append({"sample_id": sample_id, "eval_name": "humaneval", "task": "code",
                         "prompt": code_prompt(item["prompt"]),
                         "reference": {"prelude": item["prompt"], "entry_point": item["entry_point"],
                                       "test": item["test"] + f"\ncheck({item['entry_point']})\n"}})
    gsm8k = [json.loads(line) for line in open(DATA / "routellm" / "gsm8k" / "test.jsonl")]
    fresh = [i for i in range(len(gsm8k)) if f"gsm8k-{i}" not in have_ids]
    for i in sorted(rng.sample(fresh, GROWN["gsm8k"] - sum(r["eval_name"] == "gsm8k" for r in rows))):
        answer = re.sub(r"[,$]", "", gsm8k[i]["answer"].split("####")[-1]).strip()
        rows.append({"sample_id": f"gsm8k-{i}", "eval_name": "gsm8k", "task": "math",
                     "prompt": gsm8k[i]["question"] + "\nSolve it step by step, then give the final number.",
                     "reference": {"number": answer}})
    for name in OPEN_FILES:
        pairs = [c for c in chatterbot(name) if len(c) >= 2 and len(c[0]) > 12]
        fresh = [c for c in pairs if c[0].strip() not in have_prompts]
        for i, (q, a, *_) in enumerate(fresh):
            if q.strip() in {r["prompt"] for r in rows}:
                continue  # a question asked twice in the corpus
            rows.append({"sample_id": f"chatterbot-{name}-more-{i}", "eval_name": f"chatterbot-{name}", "task": "chat",
                         "prompt": q.strip(), "reference": {"answer": str(a).strip()}, "judge": "open"})
    known = {r["prompt"] for r in rows}
    for i, text in enumerate(t for t in MORE_SMALL_TALK if t not in known):
        rows.append({"sample_id": f"smalltalk-more-{i}", "eval_name": "small-talk", "task": "chat", "prompt": text,
                     "reference": None})


if __name__ == "__main__":
    main()
