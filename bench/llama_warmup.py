"""What llama.cpp's warm-up decode at load buys (issue 16's cold start): each model loaded in a fresh process with
`warmup` on and off, in alternating rounds, timing the load (wall and CPU seconds) and the first answers after it.

  .venv/bin/python bench/llama_warmup.py --out bench --rounds 3   # about 2 minutes; bench/llama_warmup.md, .json

The load is what a model replica does in its constructor (`runtime.warmup` in the Serve config); an answer is a
greedy 64-token chat answer, the same prompt each time, so the first answer shows whether the warm-up saved it work.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
BODY = {"messages": [{"role": "user", "content": "Write a Python function that reverses a string, with a docstring."}],
        "max_tokens": 64, "temperature": 0, "seed": 1}
ANSWERS = 3


def one_load(model: str, warmup: bool) -> dict:
    """In this process: load the model on 2 threads and 2 slots (the larger models' replica settings; the tiny
    model's replica runs 1 thread), then answer ANSWERS times."""
    from models.catalogue import load_catalogue
    from models.registry import make_backend

    wall, cpu = time.perf_counter(), time.process_time()
    backend = make_backend(load_catalogue().model(model), threads=2, n_parallel=2, warmup=warmup)
    load = {"load_wall_s": time.perf_counter() - wall, "load_cpu_s": time.process_time() - cpu}
    answers = []
    for _ in range(ANSWERS):
        started = time.perf_counter()
        result = backend.raw(dict(BODY))
        answers.append({"s": time.perf_counter() - started, "tokens": result["usage"]["completion_tokens"]})
    return {"model": model, "warmup": warmup, **load, "answers": answers}


def in_fresh_process(model: str, warmup: bool) -> dict:
    done = subprocess.run([sys.executable, __file__, "--one", model, str(int(warmup))], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"loading {model} (warmup {warmup}) failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(runs: list[dict]) -> list[dict]:
    rows = []
    for model in MODELS:
        for warmup in (True, False):
            mine = [r for r in runs if r["model"] == model and r["warmup"] == warmup]
            med = statistics.median
            rows.append({"model": model, "warmup": warmup, "runs": len(mine),
                         "load_wall_s": med(r["load_wall_s"] for r in mine),
                         "load_cpu_s": med(r["load_cpu_s"] for r in mine),
                         "first_answer_s": med(r["answers"][0]["s"] for r in mine),
                         "later_answers_s": med(a["s"] for r in mine for a in r["answers"][1:]),
                         "tokens": med(a["tokens"] for r in mine for a in r["answers"])})
    return rows


def render(rows: list[dict], rounds: int) -> str:
    lines = [f"Command: `.venv/bin/python bench/llama_warmup.py --out bench --rounds {rounds}`. Each model loaded "
             "in a fresh process, warm-up on and off in alternating rounds (medians of the rounds), on 2 threads and "
             "2 slots (the larger models' replica settings; the tiny model's replica runs 1 thread); then the same "
             "greedy 64-token chat answer "
             f"{ANSWERS} times.", "",
             "| model | warm-up | load, wall s | load, CPU s | first answer s | later answers s | tokens |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {'on' if r['warmup'] else 'off'} | {r['load_wall_s']:.2f} | "
                     f"{r['load_cpu_s']:.2f} | {r['first_answer_s']:.3f} | {r['later_answers_s']:.3f} | "
                     f"{r['tokens']:g} |")
    saved = sum(a["load_cpu_s"] - b["load_cpu_s"] for a, b in zip(rows[::2], rows[1::2]))
    lines += ["", f"CPU seconds the warm-up costs at load, all three models: {saved:.2f}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for llama_warmup.md and .json")
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 21), metavar="1..20")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "WARMUP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(one_load(args.one[0], args.one[1] == "1")))
        return
    if args.out is None:
        parser.error("--out is required")
    runs = []
    arms = [(m, w) for m in MODELS for w in (True, False)]
    with tqdm(total=args.rounds * len(arms), desc="loads") as bar:
        for rnd in range(args.rounds):
            for model, warmup in arms if rnd % 2 == 0 else [(m, not w) for m, w in arms]:
                runs.append({**in_fresh_process(model, warmup), "round": rnd})
                bar.update()
    rows = summary(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "llama_warmup.json").write_text(json.dumps({"rounds": args.rounds, "summary": rows, "runs": runs},
                                                           indent=1) + "\n")
    (args.out / "llama_warmup.md").write_text(render(rows, args.rounds))
    print(render(rows, args.rounds))


if __name__ == "__main__":
    main()
