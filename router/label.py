"""`router label`: run every model of the ensemble over a prompt set with references, judge each answer,
and write the outcome table. Resumable: each judged answer is appended to a raw JSONL log first, and a
re-run skips the (prompt, model) pairs already there. The log keeps every verdict for human audit.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tqdm import tqdm

from models.backend import GenerationRequest, make_backend
from models.catalogue import Catalogue, load_catalogue
from router.judges import judge
from router.outcomes import COST, build_table, save_outcomes

MAX_TOKENS = {"code": 400, "math": 320, "chat": 64}


def read_prompts(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not JSON: {exc}") from None
        missing = {"sample_id", "prompt", "task"} - set(row)
        if missing:
            raise ValueError(f"{path}:{n}: missing field(s) {sorted(missing)}")
        if row["task"] not in MAX_TOKENS:
            raise ValueError(f"{path}:{n}: unknown task {row['task']!r}; known: {sorted(MAX_TOKENS)}")
        rows.append(row)
    ids = [r["sample_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: sample_id values repeat")
    return rows


def read_log(path: Path) -> dict[tuple[str, str], dict]:
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption is redone
            done[(entry["sample_id"], entry["model"])] = entry
    return done


async def _label_model(backend, prompts, done, log, bar) -> None:
    for row in prompts:
        if (row["sample_id"], backend.name) in done:
            continue
        request = GenerationRequest(messages=[{"role": "user", "content": row["prompt"]}],
                                    max_tokens=MAX_TOKENS[row["task"]], temperature=0.0, seed=0)
        gen = await backend.generate(request)
        verdict = judge(row["task"], gen.text, row.get("reference"))
        entry = {"sample_id": row["sample_id"], "model": backend.name, "response": gen.text,
                 "score": verdict.score, "verdict": verdict.reason, "input_tokens": gen.input_tokens,
                 "output_tokens": gen.output_tokens, "latency_s": round(gen.latency_s, 3),
                 "finish_reason": gen.finish_reason}
        log.write(json.dumps(entry) + "\n")
        log.flush()
        done[(row["sample_id"], backend.name)] = entry
        bar.update(1)


def rejudge(log_path: Path, prompts: list[dict]) -> None:
    """Judge the logged answers again (after a judge is fixed), without generating anything."""
    by_id = {p["sample_id"]: p for p in prompts}
    entries = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    for e in tqdm(entries, desc="rejudge", unit="answer"):
        row = by_id.get(e["sample_id"])
        if row is not None:
            verdict = judge(row["task"], e["response"], row.get("reference"))
            e["score"], e["verdict"] = verdict.score, verdict.reason
    tmp = log_path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(e) + "\n" for e in entries))
    tmp.replace(log_path)


def label(prompts_path: Path, out_csv: Path, models: list[str] | None = None,
          catalogue: Catalogue | None = None, limit: int | None = None, rejudge_log: bool = False) -> Path:
    catalogue = catalogue or load_catalogue()
    models = models or catalogue.names()
    for name in models:
        catalogue.model(name)  # unknown names fail before any work
    prompts = read_prompts(prompts_path)[:limit]
    log_path = out_csv.with_suffix(".log.jsonl")
    if rejudge_log and log_path.exists():
        rejudge(log_path, prompts)
    done = read_log(log_path)
    todo = sum((p["sample_id"], m) not in done for p in prompts for m in models)
    with log_path.open("a") as log, tqdm(total=len(prompts) * len(models), initial=len(prompts) * len(models) - todo,
                                         desc="label", unit="answer") as bar:
        for name in models:
            if all((p["sample_id"], name) in done for p in prompts):
                continue
            backend = make_backend(catalogue.model(name))
            asyncio.run(_label_model(backend, prompts, done, log, bar))
    rows = []
    for p in prompts:
        row = {"sample_id": p["sample_id"], "prompt": p["prompt"], "eval_name": p.get("eval_name", ""), "task": p["task"]}
        for name in models:
            e = done[(p["sample_id"], name)]
            row[name] = e["score"]
            row[name + COST] = catalogue.model(name).cost(e["input_tokens"], e["output_tokens"])
            row[name + "|model_response"] = e["response"]
            row[name + "|input_tokens"] = e["input_tokens"]
            row[name + "|output_tokens"] = e["output_tokens"]
            row[name + "|latency_s"] = e["latency_s"]
        rows.append(row)
    save_outcomes(build_table(rows, models), out_csv)
    return out_csv
