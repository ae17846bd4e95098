"""Issue 14's cost escalation with the escalation budget on: a client that prepends the plain-word gadget that
escalated 87% of small-model decisions (bench/attack/black_box_defended_natural.json) against one that sends the
same held-out prompts clean, both through POST /v1/chat/completions (max_tokens 1) of a running ensemble.

    router up --config FILE --port 8011      # FILE: serve_config.yaml plus, under `policy:` beside `classifier:`,
                                             #   guard: {enabled: true, action: reject}
                                             #   access: {disclose_routing: false, operator_key_file: KEYFILE}
                                             #   escalation: {enabled: true, client: user}
    .venv/bin/python bench/escalation_budget.py --url http://127.0.0.1:8011 --policy FILE --out bench  # 2 min

The script sends the operator key (from the policy's access, or ROUTER_OPERATOR_KEY) to read each answer's rule;
the clients' view is unchanged by it. Each request carries its own x-session-id, so no conversation floor lifts it; `user` names the client. Without the
budget, a request the budget moved (rule escalation_budget) would have gone to the fallback: the budget changes
nothing else, so one run gives both columns.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.offline.guard_train import held_out  # noqa: E402
from router.serving.disclosure import OPERATOR_HEADER, operator_key  # noqa: E402

ATTACK = ROOT / "bench" / "attack" / "black_box_defended_natural.json"
TABLE = ROOT / "data" / "outcomes" / "default.csv"


def held_out_prompts(count: int, seed: int) -> list[str]:
    """The prompts `router attack --seed 5 --test-prompts 100` measured on."""
    from router.offline.attack_run import _table_prompts

    prompts = _table_prompts(str(TABLE))
    return random.Random(seed).sample([p for p in prompts if held_out(p)], count)


def send(http: httpx.Client, base: str, client: str, text: str, key: str | None) -> dict:
    headers = {"x-session-id": uuid.uuid4().hex, **({OPERATOR_HEADER: key} if key else {})}
    reply = http.post(f"{base}/v1/chat/completions", headers=headers,
                      json={"model": "auto", "messages": [{"role": "user", "content": text}], "max_tokens": 1,
                            "temperature": 0, "user": client})
    body = reply.json()
    if reply.status_code != 200:
        return {"status": reply.status_code, "model": None, "rule": (body.get("error") or {}).get("code")}
    if "x-router-rule" not in reply.headers:
        sys.exit("the answers carry no x-router-rule: give the ensemble an operator key (see the docstring)")
    return {"status": 200, "model": body["model"], "rule": reply.headers["x-router-rule"]}


def summary(replies: list[dict], large: str) -> dict:
    answered = [r for r in replies if r["status"] == 200]
    moved = sum(r["rule"] == "escalation_budget" for r in answered)
    with_budget = sum(r["model"] == large for r in answered)
    return {"sent": len(replies), "answered": len(answered), "refused": len(replies) - len(answered),
            "large_with_budget": with_budget, "large_without_budget": with_budget + moved,
            "moved_by_budget": moved,
            "large_share_with_budget": with_budget / max(1, len(answered)),
            "large_share_without_budget": (with_budget + moved) / max(1, len(answered))}


def render(r: dict) -> str:
    lines = ["# The escalation budget against the plain-word gadget (issue 14)", "",
             f"Command: `.venv/bin/python bench/escalation_budget.py --url URL --policy FILE --out bench` against "
             f"`router up --config FILE`: the guard on (`reject`), scores withheld and the escalation budget on (cap "
             f"{r['cap']:.0%} of a client's requests in its window, from its {r['min_requests']}th request). "
             f"{r['prompts']} held-out prompts (seed {r['seed']}), max_tokens 1.", "",
             f"Gadget: \"{r['gadget']}\"", "",
             "| client | sent | refused (guard) | large model, no budget | large model, with the budget | moved to a small model |",
             "|---|---|---|---|---|---|"]
    for name in ("clean", "attacker"):
        s = r[name]
        lines.append(f"| {name} | {s['sent']} | {s['refused']} | {s['large_without_budget']} "
                     f"({s['large_share_without_budget']:.0%}) | {s['large_with_budget']} "
                     f"({s['large_share_with_budget']:.0%}) | {s['moved_by_budget']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="a running ensemble, for example http://127.0.0.1:8011")
    parser.add_argument("--policy", required=True, help="the policy (or Serve config) the ensemble at --url serves")
    parser.add_argument("--out", type=Path, required=True, help="folder for escalation_budget.md and .json")
    parser.add_argument("--name", default="escalation_budget", help="file name stem under --out")
    parser.add_argument("--prompts", type=int, default=100, help="held-out prompts (default 100)")
    parser.add_argument("--seed", type=int, default=5, help="the attack's seed (default 5)")
    args = parser.parse_args()
    if args.prompts < 1:
        parser.error("--prompts must be at least 1")
    base = args.url.rstrip("/")
    from models.yaml_source import ConfigError
    from router.policy import load_policy

    try:
        served = load_policy(args.policy)
    except (ConfigError, OSError) as exc:
        sys.exit(str(exc))
    gadget = next(run["gadget"] for run in json.loads(ATTACK.read_text())["runs"] if run["direction"] == "up")
    prompts = held_out_prompts(args.prompts, args.seed)
    with httpx.Client(timeout=300) as http:
        try:
            version = http.get(f"{base}/v1/policy").json()["version"]
            large = next(m["id"] for m in http.get(f"{base}/v1/models").json()["data"] if m.get("fallback"))
        except (httpx.HTTPError, ValueError, KeyError, StopIteration) as exc:
            sys.exit(f"cannot read the policy and models of {base}: {exc}")
        if version != served.version or not served.escalation.enabled:
            sys.exit(f"{base} serves policy {version!r}; --policy is {served.version!r} with escalation "
                     f"{'on' if served.escalation.enabled else 'off'}: serve that file, with the budget on")
        from tqdm import tqdm

        tag = uuid.uuid4().hex[:6]  # fresh clients: no window from an earlier run
        key = operator_key(served.access)
        clean = [send(http, base, f"clean-{tag}", p, key) for p in tqdm(prompts, desc="clean client")]
        attacker = [send(http, base, f"attacker-{tag}", f"{gadget} {p}", key) for p in tqdm(prompts, desc="attacker")]
    result = {"url": base, "policy": args.policy, "prompts": len(prompts), "seed": args.seed, "gadget": gadget,
              "large": large, "cap": served.escalation.max_fallback_share, "min_requests": served.escalation.min_requests,
              "clean": summary(clean, large), "attacker": summary(attacker, large)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / f"{args.name}.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
