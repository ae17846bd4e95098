"""`router label`: run every model of an ensemble over a prompt set that carries references, judge each answer,
and write one outcome table (RouterBench's wide layout, router/offline/outcomes.py).

- Parallel: one Ray actor per model, so the same command spreads over a Ray cluster (`--address auto`).
- Resumable: each judged answer is appended to a JSONL log before anything else; a re-run skips the
  (prompt, model) pairs already there with the same generation settings, so an interrupted run continues.
- Auditable: the log keeps every answer and the judge's verdict (the grader's reply for open questions).
- Safe: model-written code runs only in the isolated sandbox (router/offline/sandbox.py); when the sandbox cannot start,
  the command stops before it runs anything.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
from collections import deque
from pathlib import Path

from tqdm import tqdm

from models.catalogue import Catalogue, load_catalogue
from router.offline.judges import grading_prompt, judge, judge_open
from router.offline.outcomes import COST, build_table, save_outcomes
from router.offline.sandbox import Sandbox, SandboxUnavailable

DEFAULT_MAX_TOKENS = {"code": 400, "math": 512, "chat": 64}
GRADER_MAX_TOKENS = 96  # room for a one-line comparison before the grade


def read_prompts(path: Path) -> list[dict]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the prompt set: {exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not JSON: {exc}") from None
        missing = {"sample_id", "prompt", "task"} - set(row)
        if missing:
            raise ValueError(f"{path}:{n}: missing field(s) {sorted(missing)}")
        if row["task"] not in DEFAULT_MAX_TOKENS:
            raise ValueError(f"{path}:{n}: unknown task {row['task']!r}; known: {sorted(DEFAULT_MAX_TOKENS)}")
        if row.get("judge") == "open" and not (row.get("reference") or {}).get("answer"):
            raise ValueError(f"{path}:{n}: an open question needs reference.answer")
        row.setdefault("max_tokens", DEFAULT_MAX_TOKENS[row["task"]])
        rows.append(row)
    ids = [r["sample_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: sample_id values repeat")
    return rows


def generation_key(row: dict, model_sha256: str) -> str:
    """Answers are reused on resume only if made from the same prompt, settings and weights."""
    return hashlib.sha256(f"{row['prompt']}|{row['max_tokens']}|t0|{model_sha256}".encode()).hexdigest()[:16]


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


def judged(task: str, answer: str, reference, sandbox: Sandbox):
    """judge(), but a refusal to run code stops the run instead of being logged as a verdict."""
    verdict = judge(task, answer, reference, sandbox)
    if verdict.score is None:
        raise SandboxUnavailable(verdict.reason)
    return verdict


def rejudge(log_path: Path, prompts: list[dict], grader: str, catalogue: Catalogue, sandbox: Sandbox) -> None:
    """Judge logged answers again after a judge or the rubric changes, without generating answers anew.
    Open questions are graded again by the grader model, loaded in this process."""
    import asyncio

    from models.backend import GenerationRequest
    from models.registry import make_backend

    by_id = {p["sample_id"]: p for p in prompts}
    entries = list(read_log(log_path).values())  # one entry per (prompt, model): the last one logged
    backend = make_backend(catalogue.model(grader)) if any(
        by_id.get(e["sample_id"], {}).get("judge") == "open" for e in entries) else None
    for e in tqdm(entries, desc="rejudge", unit="answer"):
        row = by_id.get(e["sample_id"])
        if row is None:
            continue
        if row.get("judge") == "open":
            request = GenerationRequest(**_request(grading_prompt(row["prompt"], row["reference"], e["response"]),
                                                   GRADER_MAX_TOKENS))
            reply = asyncio.run(backend.generate(request)).text
            verdict = judge_open(e["response"], row["reference"], reply)
            e["grader"] = {"model": grader, "reply": reply}
        else:
            verdict = judged(row["task"], e["response"], row.get("reference"), sandbox)
        e["score"], e["verdict"] = verdict.score, verdict.reason
    tmp = log_path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(e) + "\n" for e in entries))
    tmp.replace(log_path)


def _on_node(i: int):
    """The i-th model's actor goes to the i-th alive node, round robin: on a cluster (--address) the models
    spread over the nodes (neither SPREAD nor a soft affinity kept actors that claim no CPU apart). If that node
    dies, its actor fails and the run stops; run it again and it resumes from its log."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
    return NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=False)


def _model_worker():
    import ray

    @ray.remote(num_cpus=0)
    class ModelWorker:
        """One model per actor; requests run concurrently on llama.cpp's slots."""

        def __init__(self, name: str, runtime: dict):
            from models.registry import make_backend

            self.backend = make_backend(load_catalogue().model(name), **runtime)

        async def generate(self, request: dict) -> dict:
            import dataclasses

            from models.backend import GenerationRequest

            return dataclasses.asdict(await self.backend.generate(GenerationRequest(**request)))

    return ModelWorker


def _request(content: str, max_tokens: int) -> dict:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0.0,
            "seed": 0}


def run_labelling(prompts: list[dict], models: list[str], catalogue: Catalogue, log_path: Path,
                  grader: str, sandbox: Sandbox, per_model: int = 2, threads: int | None = None,
                  address: str | None = None) -> None:
    import ray

    keys = {(p["sample_id"], m): generation_key(p, catalogue.model(m).identity()) for p in prompts for m in models}
    done = read_log(log_path)
    todo = {m: deque(p for p in prompts if done.get((p["sample_id"], m), {}).get("gen_key") != keys[(p["sample_id"], m)])
            for m in models}
    total = sum(len(q) for q in todo.values())
    if total == 0:
        return
    needs_grader = any(p.get("judge") == "open" for q in todo.values() for p in q)
    active = [m for m in models if todo[m]] + ([grader] if needs_grader and not todo.get(grader) else [])
    threads = threads or max(1, (os.cpu_count() or 2) // len(active))
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, logging_level="warning")
    try:
        Worker = _model_worker()
        runtime = {"n_parallel": per_model, "slot_context": 4096, "threads": threads}
        workers = {m: Worker.options(scheduling_strategy=_on_node(i)).remote(m, runtime)
                   for i, m in enumerate(dict.fromkeys(active))}
        in_flight: dict = {}  # ObjectRef -> (kind, model, prompt, answer entry)

        def submit(model: str) -> None:
            if todo[model]:
                p = todo[model].popleft()
                ref = workers[model].generate.remote(_request(p["prompt"], p["max_tokens"]))
                in_flight[ref] = ("answer", model, p, None)

        stop = threading.Event()  # set by Ctrl-C or SIGTERM: stop cleanly, keep what is logged
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        with log_path.open("a") as log, tqdm(total=total, desc="label", unit="answer") as bar:
            for m in models:
                for _ in range(per_model):
                    submit(m)
            while in_flight and not stop.is_set():
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)  # wake up to see a signal
                if not ready:
                    continue
                kind, model, p, entry = in_flight.pop(ready[0])
                result = ray.get(ready[0])
                if kind == "answer":
                    entry = {"sample_id": p["sample_id"], "model": model, "gen_key": keys[(p["sample_id"], model)],
                             "response": result["text"], "input_tokens": result["input_tokens"],
                             "output_tokens": result["output_tokens"], "latency_s": round(result["latency_s"], 3),
                             "finish_reason": result["finish_reason"]}
                    submit(model)
                    if p.get("judge") == "open":
                        ref = workers[grader].generate.remote(_request(
                            grading_prompt(p["prompt"], p["reference"], result["text"]), GRADER_MAX_TOKENS))
                        in_flight[ref] = ("grade", model, p, entry)
                        continue
                    verdict = judged(p["task"], result["text"], p.get("reference"), sandbox)
                else:
                    verdict = judge_open(entry["response"], p["reference"], result["text"])
                    entry["grader"] = {"model": grader, "reply": result["text"]}
                log.write(json.dumps({**entry, "score": verdict.score, "verdict": verdict.reason}) + "\n")
                log.flush()
                bar.update(1)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if stop.is_set():
            raise KeyboardInterrupt
    finally:
        if started_here:
            ray.shutdown()


def write_table(prompts: list[dict], models: list[str], catalogue: Catalogue, log_path: Path, out_csv: Path) -> Path:
    done = read_log(log_path)
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
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    save_outcomes(build_table(rows, models), out_csv)
    return out_csv


def label(prompts_path: Path, out_csv: Path, models: list[str] | None = None, catalogue: Catalogue | None = None,
          limit: int | None = None, rejudge_log: bool = False, grader: str | None = None, per_model: int = 2,
          threads: int | None = None, address: str | None = None, sandbox: Sandbox | None = None) -> Path:
    catalogue = catalogue or load_catalogue()
    sandbox = sandbox or Sandbox()
    models = models or catalogue.names()
    grader = grader or catalogue.models[-1].name
    for name in [*models, grader]:
        catalogue.model(name)  # unknown names fail before any work
    prompts = read_prompts(prompts_path)[:limit]
    if any(p["task"] == "code" for p in prompts):
        sandbox.check()  # stop before any work when model-written code could not run isolated
    log_path = out_csv.with_suffix(".log.jsonl")
    if rejudge_log and log_path.exists():
        rejudge(log_path, prompts, grader, catalogue, sandbox)
    run_labelling(prompts, models, catalogue, log_path, grader, sandbox, per_model, threads, address)
    return write_table(prompts, models, catalogue, log_path, out_csv)
