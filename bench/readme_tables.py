"""Render README's `make bench` tables from one results file, so that every figure in them comes from the same run;
with --runs, also the goals' ratios of several runs side by side.

    .venv/bin/python bench/readme_tables.py bench/results.json [--runs A.json B.json ...]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

GOAL = re.compile(r"^(?P<name>\S+) \(goal (?P<op><=|>=) (?P<bound>[\d.]+)\)$")
STATIC = "batched_decisions_per_s_static_encoder_router"
STATIC_NOTE = " (the same decisions with `data/router/static.json`, an option below)"


def verdict(name: str, value: float, op: str, bound: float) -> str:
    met = value <= bound if op == "<=" else value >= bound
    if name == STATIC:
        return "met by the option" if met else "not met by the option either"
    return "met" if met else "not met in this run"


def ratio_rows(ratios: dict[str, float]) -> list[str]:
    """One row per ratio: a goal and whether this run met it, or "(context)" for a ratio with no goal."""
    rows = ["| ratio (issue 16 and 13) | goal | this run | |", "|---|---|---|---|"]
    for key, value in ratios.items():
        goal = GOAL.match(key)
        if goal is None:
            rows.append(f"| `{key}` | (context) | {value:g} |  |")
            continue
        name, op, bound = goal["name"], goal["op"], float(goal["bound"])
        label = f"`{name}`" + (STATIC_NOTE if name == STATIC else "")
        rows.append(f"| {label} | goal {op} {bound:g} | {value:g} | {verdict(name, value, op, bound)} |")
    return rows


def ms(x: float) -> str:
    return f"{x:.1f} ms"


def scaling_rows(plain: dict, direct: dict, proxy: dict) -> list[str]:
    head = "| clients |" + "".join(f" {w} req/s | {w} p50 | {w} p99 |" for w in ("plain", "direct", "proxy"))
    rows = [head, "|" + "---|" * 10]
    for key in plain:
        cells = "".join(f" {s[key]['req_per_s']:.0f} | {ms(s[key]['p50_ms'])} | {ms(s[key]['p99_ms'])} |"
                        for s in (plain, direct, proxy))
        rows.append(f"| {plain[key]['clients']} |{cells}")
    return rows


def stream_rows(served: dict, raw: dict) -> list[str]:
    rows = ["| streams | served | raw runtime |", "|---|---|---|"]
    rows += [f"| {k.split('_')[0]} | {served[k]:.0f} | {raw[k]:.0f} |" for k in served]
    return rows


def value_rows(serve: dict) -> list[str]:
    mem, speeds = serve["memory"], serve["tokens_per_s_end_to_end"]
    direct, proxy = serve["tiny_answer_via_direct_ingress"], serve["tiny_answer_via_ensemble"]
    alone, logging = serve["tiny_answer_direct"], serve["logging_on_vs_off"]
    share = {k: (v["p50_ms"] - alone["p50_ms"]) / v["p50_ms"] for k, v in (("direct", direct), ("proxy", proxy))}
    return [
        "| what | value |", "|---|---|",
        f"| cold start: `ray.init` until `/healthz` answers 200 (all models and the encoder loaded) | "
        f"{serve['cold_start_s']} s |",
        f"| resident memory of the whole ensemble ({mem['processes']} Ray processes, dashboard included) | "
        f"{mem['rss_gib']} GiB RSS, {mem['pss_gib']} GiB PSS |",
        "| end-to-end tokens/s, 128 new tokens, one request at a time | "
        + ", ".join(f"{m} {v:.0f}" for m, v in speeds.items()) + " |",
        f"| the tiny model's whole answer ({direct['answered_by_tokens'][0][1]} tokens, greedy) on the ingress "
        f"replica's own port | p50 {direct['p50_ms']:.0f} ms |",
        f"| of which generation, timed inside the model replica (`router.model_latency_s` in the body) | "
        f"p50 {direct['generation_in_replica']['p50_ms']:.0f} ms |",
        "| of which the request path: HTTP, routing, one Serve hop to the model (the difference, per request) | "
        f"p50 {direct['request_path']['p50_ms']:.0f} ms |",
        f"| the same answer through Serve's proxy (one more hop) | p50 {proxy['p50_ms']:.0f} ms, of which the "
        f"request path {proxy['request_path']['p50_ms']:.0f} ms |",
        "| the same answer from the same model and llama.cpp settings called in-process, after the ensemble is "
        f"down | p50 {alone['p50_ms']:.0f} ms |",
        "| **the ensemble's overhead as a share of the tiny model's answer time** (direct port; through the proxy) "
        f"| **{share['direct']:.0%}**; {share['proxy']:.0%} |",
        *rounds_rows(serve),
        "| the tiny model's whole answer with the decision store on, against off (`logging_on_vs_off_p50`; three "
        "alternating rounds of 20 answers each way through the proxy, the ingress redeployed with "
        f"`record_decisions: false` and back) | **{logging['on_vs_off_p50']:g}** (p50 {logging['on']['p50_ms']:.0f} "
        f"against {logging['off']['p50_ms']:.0f} ms) |"]


def rounds_rows(serve: dict) -> list[str]:
    """The answer and tokens goals' alternating rounds, where the run has them."""
    rounds = serve.get("served_vs_alone_rounds")
    if rounds is None:
        return []
    p50s = lambda side: " / ".join(f"{v:.0f}" for v in rounds[f"round_p50s_{side}"])  # noqa: E731
    tokens = lambda side: " / ".join(f"{v:.0f}" for v in rounds[f"round_tokens_4_streams_{side}"])  # noqa: E731
    return [
        f"| the tiny answer in {rounds['rounds']} alternating rounds, each a fresh ensemble (direct port) and then "
        "the model alone in-process with the cluster down; the first round is the lines above | p50 by round "
        f"{p50s('served')} ms served against {p50s('alone')} ms alone; pooled p50 {rounds['answer_served']['p50_ms']:.0f}"
        f" against {rounds['answer_alone']['p50_ms']:.0f} ms (**{rounds['answer_served_vs_alone_p50']:g}**) |",
        "| the tiny model's tokens/s at 4 concurrent streams in the same rounds (served through the proxy; the raw "
        f"runtime in-process) | {tokens('served')} served against {tokens('alone')} raw; median ratio "
        f"**{rounds['tokens_served_vs_alone_4_streams']:g}** |"]


def in_process_rows(in_process: dict, serve: dict) -> list[str]:
    route, pure, proxy = in_process["route_in_process"], in_process["decide_pure"], serve["route_via_serve"]
    return [
        "| what | p50 | p99 |", "|---|---|---|",
        "| routing decision in-process (encoder on 2 threads + classifier + policy), short chat prompts | "
        f"{route['p50_ms']:.1f} ms | {route['p99_ms']:.1f} ms |",
        f"| the pure `decide()` function alone | {pure['p50_ms']:.3f} ms | {pure['p99_ms']:.3f} ms |",
        "| `POST /v1/route` through Serve's proxy (sequential, one client on a kept-alive connection) | "
        f"{proxy['p50_ms']:.1f} ms | {proxy['p99_ms']:.1f} ms |"]


def decision_line(in_process: dict) -> str:
    rates = in_process["decisions_per_s"]
    return (f"Decisions per second on {rates['mean_prompt_tokens']} tokens: {rates['one_at_a_time']} one at a time, "
            f"{rates['batched_32']} in batches of 32 ({rates['batched_vs_one']}×); the encoder alone "
            f"{rates['encoder_alone_prompts_per_s']} prompts/s ({rates['encoder_tokens_per_s']} tokens/s); the "
            f"static encoder's router {in_process['static_encoder']['decisions_per_s']['batched_32']} batched.")


def memory_line(serve: dict) -> str:
    kinds = serve["memory"]["pss_gib_by_kind"]
    return "PSS in GiB by process (`serve.memory.pss_gib_by_kind`): " + ", ".join(f"{k} {v}" for k, v in kinds.items())


def runs_rows(named: dict[str, dict]) -> list[str]:
    """The goals' ratios of several runs side by side, each cell marked when it misses its goal."""
    # every goal any run has, in first-seen order: a goal whose measurement changed has a new key from then on
    keys = list(dict.fromkeys(k for results in named.values() for k in results["ratios"] if GOAL.match(k)))
    rows = ["| goal | " + " | ".join(named) + " |", "|---" * (len(named) + 1) + "|"]
    for key in keys:
        goal = GOAL.match(key)
        cells = []
        for results in named.values():
            value = results["ratios"].get(key)
            if value is None and goal["name"] in results["ratios"]:  # the same measurement, kept as context there
                cells.append(f"{results['ratios'][goal['name']]:g} (context)")
                continue
            met = value is not None and verdict(goal["name"], value, goal["op"], float(goal["bound"])).startswith("met")
            cells.append("-" if value is None else f"{value:g}" + ("" if met else " (missed)"))
        rows.append(f"| `{goal['name']}` {goal['op']} {float(goal['bound']):g} | " + " | ".join(cells) + " |")
    for label, cell in CONTEXT_ROWS:
        rows.append(f"| {label} | " + " | ".join(cell(results["serve"]) for results in named.values()) + " |")
    return rows


# where the route path's and the tiny answer's time goes, per run: what README's text about the runs reads
CONTEXT_ROWS = [
    ("(context) the proxy's hop: `/v1/route` p50 through the proxy minus direct, 1 client",
     lambda s: f"{s['route_load']['1_clients']['p50_ms'] - s['route_load_direct']['1_clients']['p50_ms']:.1f} ms"),
    ("(context) the tiny answer's request path on the direct port, p50",
     lambda s: f"{s['tiny_answer_via_direct_ingress']['request_path']['p50_ms']:.0f} ms"),
    ("(context) the tiny answer's generation inside its replica / alone in-process, p50",
     lambda s: f"{s['tiny_answer_via_direct_ingress']['generation_in_replica']['p50_ms']:.0f} / "
               f"{s['tiny_answer_direct']['p50_ms']:.0f} ms"),
    ("(context) the tiny answer served against alone in each alternating round, p50s",
     lambda s: ", ".join(f"{a / b:.2f}" for a, b in zip(s["served_vs_alone_rounds"]["round_p50s_served"],
                                                       s["served_vs_alone_rounds"]["round_p50s_alone"]))
     if "served_vs_alone_rounds" in s else "-"),
]


def render(results: dict) -> str:
    serve = results["serve"]
    sections = [ratio_rows(results["ratios"]), in_process_rows(results["in_process"], serve),
                [decision_line(results["in_process"])],
                scaling_rows(results["plain_fastapi"], serve["route_load_direct"], serve["route_load"]),
                stream_rows(serve["tiny_model_stream_tokens_per_s"], serve["raw_runtime_stream_tokens_per_s"]),
                value_rows(serve), [memory_line(serve)]]
    return "\n\n".join("\n".join(rows) for rows in sections) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a file that bench/bench_router.py wrote")
    parser.add_argument("--runs", type=Path, nargs="+", default=[], help="more such files, for a table of the runs")
    args = parser.parse_args(argv)
    try:
        results = json.loads(args.results.read_text())
        print(render(results), end="")
        if args.runs:
            named = {path.name: json.loads(path.read_text()) for path in args.runs}
            print("\n" + "\n".join(runs_rows(named)))
    except (OSError, ValueError) as e:
        print(f"error: cannot read {args.results}: {e}", file=sys.stderr)
        return 2
    except (KeyError, TypeError, IndexError) as e:
        print(f"error: {args.results} is not a results file of bench/bench_router.py (missing {e})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
