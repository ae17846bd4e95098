"""What the opt-in request features cost: JSON mode (llama.cpp's grammar-constrained sampling) and the Responses API
with its stored response, each against the same greedy chat through Serve's proxy, on the tiny model. Each round
asks every shape once, each with a fresh prompt and in turn first, so drift on a shared machine and llama.cpp's
cached prompt prefix favour no shape. The stored
response's own cost, one database insert awaited before the answer goes out (and one read to continue it), and the
shared answer cache's reads and writes are also timed in-process on a SQLite file like the shipped default, where
the proxy's noise does not hide them. `--store-url URL` times those on another database instead: an empty one,
which the bench migrates and fills (a store with rows is refused, as the cache's trims would delete them).
`--store-only` skips the HTTP rounds.

    .venv/bin/python bench/request_features.py --out bench     # about 2 minutes; writes request_features.md and .json
    .venv/bin/python bench/request_features.py --out DIR --store-only --store-url postgresql+psycopg://USER@HOST/DB
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_router import OVERHEAD_TOKENS, percentiles  # noqa: E402

TINY = "smollm2-135m"
# long enough an answer that every shape fills its tokens, so the rows compare the same work
PROMPT = "Tell me about your day, in detail."
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["mood", "reply"],
          "properties": {"mood": {"enum": ["good", "bad"]}, "reply": {"type": "string"}}}


def chat(response_format: dict | None = None):
    def body(prompt: str) -> tuple[str, dict]:
        shape = {"model": TINY, "max_tokens": OVERHEAD_TOKENS, "temperature": 0,
                 "messages": [{"role": "user", "content": prompt}]}
        return "/v1/chat/completions", shape | ({"response_format": response_format} if response_format else {})
    return body


def responses(store: bool):
    def body(prompt: str) -> tuple[str, dict]:
        return "/v1/responses", {"model": TINY, "max_output_tokens": OVERHEAD_TOKENS, "temperature": 0,
                                 "input": prompt, "store": store}
    return body


SHAPES = {  # the first is the baseline
    "chat": chat(),
    "chat, JSON mode (json_object)": chat({"type": "json_object"}),
    "chat, JSON schema (strict)": chat({"type": "json_schema",
                                        "json_schema": {"name": "mood", "schema": SCHEMA, "strict": True}}),
    "Responses API, store false": responses(False),
    "Responses API, stored (the default)": responses(True),
}


def answered(http: httpx.Client, base: str, shape, prompt: str) -> tuple[float, int]:
    """(milliseconds, completion tokens) of one whole answer."""
    path, body = shape(prompt)
    started = time.perf_counter()
    reply = http.post(f"{base}{path}", json=body)
    elapsed = (time.perf_counter() - started) * 1000
    reply.raise_for_status()
    usage = reply.json()["usage"]
    return elapsed, usage.get("completion_tokens", usage.get("output_tokens", 0))


def measure_http(base: str, runs: int) -> dict:
    samples = {name: {"ms": [], "tokens": []} for name in SHAPES}
    with httpx.Client(timeout=300) as http:
        for i in range(runs + 2):  # two warm-up rounds
            order = list(range(len(SHAPES)))[i % len(SHAPES):] + list(range(len(SHAPES)))[:i % len(SHAPES)]
            for k in order:  # each shape goes first in turn
                name = list(SHAPES)[k]
                # a prompt of its own: llama.cpp reuses a cached prompt prefix, which would favour all but the first
                # (the same length for every shape, so none reads a longer prompt)
                ms, tokens = answered(http, base, SHAPES[name], f"{PROMPT} (round {i}, shape {k})")
                if i >= 2:
                    samples[name]["ms"].append(round(ms, 3))
                    samples[name]["tokens"].append(tokens)
    baseline = statistics.median(samples["chat"]["ms"])
    rows = {}
    for name, got in samples.items():
        per_token = [ms / max(1, n) for ms, n in zip(got["ms"], got["tokens"])]
        rows[name] = {**percentiles(got["ms"]), "tokens_p50": statistics.median(got["tokens"]),
                      "ms_per_token_p50": round(statistics.median(per_token), 3),
                      "ratio_p50": round(statistics.median(got["ms"]) / baseline, 3),
                      # each round's own ratio, so drift between rounds cancels
                      "paired_ratio_p50": round(statistics.median(
                          ms / chat_ms for ms, chat_ms in zip(got["ms"], samples["chat"]["ms"])), 3),
                      "samples_ms": got["ms"]}
    return rows


@contextlib.contextmanager
def store_engine(url: str | None):
    """The database timed: `url` (migrated to head), or a fresh SQLite file (WAL, as the ingress opens it)."""
    from router.store.store import migrate, open_engine

    with tempfile.TemporaryDirectory() as folder:
        engine = open_engine(url or f"sqlite:///{folder}/decisions.db")
        try:
            migrate(engine)
            yield engine
        finally:
            engine.dispose()


def refuse_a_used_store(engine) -> None:
    """The bench fills the answer cache to `max_entries`, and its trims delete the oldest entries, so a store that
    holds anything (a live one) is refused rather than measured."""
    from sqlalchemy import func, select

    from router.store.schema import metadata

    with engine.connect() as connection:
        used = [t.name for t in metadata.sorted_tables
                if connection.execute(select(func.count()).select_from(t)).scalar()]
    if used:
        raise ValueError(f"the database is not empty (rows in {', '.join(used)}); give an empty one")


def measure_store(runs: int, url: str | None = None) -> dict:
    """ResponseStore.keep and .get, a realistic row each."""
    from router.store.responses import ResponseStore

    with store_engine(url) as engine:
        kept = ResponseStore(engine)
        timings: dict[str, list[float]] = {"keep": [], "get": []}
        for i in range(runs + 10):
            response = {"id": f"resp_{i:024d}", "object": "response", "status": "completed", "model": TINY,
                        "output": [{"type": "message", "role": "assistant", "status": "completed",
                                    "content": [{"type": "output_text", "text": "I am fine, thank you! " * 8}]}]}
            turns = [{"role": "user", "content": PROMPT},
                     {"role": "assistant", "content": "I am fine, thank you! " * 8}]
            started = time.perf_counter()
            kept.keep(response, [{"type": "message", "role": "user", "content": PROMPT}], turns)
            middle = time.perf_counter()
            kept.get(response["id"])
            done = time.perf_counter()
            if i >= 10:
                timings["keep"].append(round((middle - started) * 1000, 4))
                timings["get"].append(round((done - middle) * 1000, 4))
    return {name: percentiles(values) for name, values in timings.items()}


def measure_shared_cache(runs: int, max_entries: int = 1024, url: str | None = None) -> dict:
    """The shared answer cache (policy `cache.shared`), full to the policy's default `max_entries`, so that its
    trims run: a lookup that misses, the keep after it, and a lookup that hits."""
    from router.store.answers import SharedAnswers

    answer = ["smollm2-135m", {"text": "I am fine, thank you! " * 8, "finish_reason": "length", "input_tokens": 20,
                               "output_tokens": 32, "latency_s": 0.5}]
    with store_engine(url) as engine:
        shared = SharedAnswers(engine)
        for i in range(max_entries):
            shared.put(f"fill-{i}", answer, 600, max_entries)
        timings: dict[str, list[float]] = {"miss": [], "put": [], "hit": []}
        for i in range(runs):
            steps = (("miss", lambda: shared.get(f"key-{i}", 600)),
                     ("put", lambda: shared.put(f"key-{i}", answer, 600, max_entries)),
                     ("hit", lambda: shared.get(f"key-{i}", 600)))
            for name, step in steps:
                started = time.perf_counter()
                step()
                timings[name].append(round((time.perf_counter() - started) * 1000, 4))
        left = len(shared)
    return {**{name: percentiles(values) for name, values in timings.items()}, "entries_after": left}


def render(r: dict) -> str:
    lines = ["# What the opt-in request features cost", "", f"Command: `{r['command']}` ({r['machine']})."]
    if r.get("http"):
        lines += ["", f"{r['runs']} rounds, each shape once a round, first in turn, each request a fresh greedy prompt, "
                  f"up to {OVERHEAD_TOKENS} tokens from {TINY}, through Serve's proxy.", "",
                  "| request | p50 (ms) | p99 (ms) | tokens (p50) | ms per token (p50) | p50 against the chat | "
                  "median of each round's ratio to its chat |", "|---|---|---|---|---|---|---|"]
        for name, row in r["http"].items():
            lines.append(f"| {name} | {row['p50_ms']} | {row['p99_ms']} | {row['tokens_p50']:g} | "
                         f"{row['ms_per_token_p50']} | {row['ratio_p50']:.3f} | {row['paired_ratio_p50']:.3f} |")
    keep, get = r["store"]["keep"], r["store"]["get"]
    lines += ["", f"The stored response in-process ({r['store_runs']} runs on {r['database']}): "
              f"`ResponseStore.keep` p50 {keep['p50_ms']} ms (p99 {keep['p99_ms']} ms), awaited before the answer "
              f"goes out; `ResponseStore.get`, which `previous_response_id` adds, p50 {get['p50_ms']} ms "
              f"(p99 {get['p99_ms']} ms).", ""]
    shared = r["shared_cache"]
    lines += [f"The shared answer cache (`cache.shared`) in-process, on {r['database']}, full to its default 1024 "
              f"entries ({r['store_runs']} runs): a lookup that misses p50 {shared['miss']['p50_ms']} ms, the keep "
              f"after it p50 {shared['put']['p50_ms']} ms (p99 {shared['put']['p99_ms']} ms, a trim to "
              f"`max_entries` every 32 keeps included; {shared['entries_after']} entries after), a lookup that hits "
              f"p50 {shared['hit']['p50_ms']} ms (p99 {shared['hit']['p99_ms']} ms).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for request_features.md and .json (request_features_store.* with --store-only)")
    parser.add_argument("--runs", type=int, default=30, help="rounds of every request shape (default 30)")
    parser.add_argument("--store-runs", type=int, default=300, help="in-process store round trips (default 300)")
    parser.add_argument("--store-url", help="time the store on this database (an empty one) instead of SQLite")
    parser.add_argument("--store-only", action="store_true", help="only the in-process store timings")
    args = parser.parse_args()
    if args.runs < 1 or args.store_runs < 1:
        parser.error("--runs and --store-runs must be at least 1")
    from sqlalchemy.engine import make_url

    database = "a SQLite file, WAL, as shipped"
    if args.store_url:
        try:
            database = make_url(args.store_url).render_as_string(hide_password=True)
        except Exception as exc:  # sqlalchemy's ArgumentError names what it could not parse
            parser.error(f"--store-url is not a database URL: {exc}")
    try:
        if args.store_url:  # checked once: the first measurement below fills the store
            with store_engine(args.store_url) as engine:
                refuse_a_used_store(engine)
        store = measure_store(args.store_runs, args.store_url)
        shared_cache = measure_shared_cache(args.store_runs, url=args.store_url)
    except Exception as exc:  # an unreachable or refusing database: name it, no traceback
        parser.error(f"--store-url {database}: {str(exc).splitlines()[0]}")
    http = None
    if not args.store_only:
        from router.serving.local_ensemble import local_ensemble

        with local_ensemble() as ens:
            http = measure_http(ens.base, args.runs)
    command = " ".join([".venv/bin/python bench/request_features.py --out", str(args.out)]
                       + (["--store-only"] if args.store_only else [])
                       + ([f"--store-url {database}"] if args.store_url else []))
    result = {"machine": "2 CPU cores, no GPU", "command": command, "runs": args.runs, "store_runs": args.store_runs,
              "database": database, "http": http, "store": store, "shared_cache": shared_cache}
    name = "request_features_store" if args.store_only else "request_features"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / f"{name}.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
