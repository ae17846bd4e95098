"""Issue 14, cost escalation: does erase-and-check stop gadgets that send prompts to the large model?

Erase-and-check (Kumar, Agarwal, Srinivas, Li, Feizi, Lakkaraju, "Certifying LLM Safety against Adversarial
Prompting", 2023) decides on a prompt and on every copy of it with up to `depth` words erased from one end, and
certifies: an adversarial sequence of at most `depth` words at that end cannot change the outcome. For a router
the rule is "the cheapest decision over the prompt and its copies with the first 1..depth words erased" (a copy
keeps at least 3 words). A prefix gadget of at most `depth` words then cannot escalate a prompt that goes to a
small model on its own, because one copy is that prompt. This script measures, with the shipped router and
serve_config.yaml's policy (guard off):
- clean prompts: the share of decisions that some erased copy changes (as a detector, its false alarms), and
  quality kept and cost saved with the rule against without it (knn k=64 refitted on half-table splits, 3 seeds);
- gadgets: `router attack`'s white-box search (24 candidates a step, 16 search prompts, seed 5, the 100 held-out
  prompts) run against the rule itself, tokenizer words and plain words: up at `depth` words and at `depth` + 4,
  and down at `depth`.

    .venv/bin/python bench/erase_and_check.py --out bench    # about 25 minutes; writes erase_and_check.md/.json
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from router.families import make_family  # noqa: E402
from router.offline.attack import (DOWN, UP, Observation, WhiteBoxView, find_gadget, flip_rates,  # noqa: E402
                                   margin_of)
from router.offline.attack_run import _router, _with_guard  # noqa: E402
from router.offline.guard_train import held_out, vocabularies_for  # noqa: E402
from router.offline.outcomes import load_outcomes  # noqa: E402
from router.offline.train import fit_table, table_features  # noqa: E402

TABLE = ROOT / "data" / "outcomes" / "default.csv"


def erased(text: str, depth: int, keep: int = 3) -> list[str]:
    """The prompt, then copies with its first 1..depth words erased, each keeping at least `keep` words."""
    words = text.split()
    return [text] + [" ".join(words[k:]) for k in range(1, depth + 1) if len(words) - k >= keep]


class Router:
    """The serving decision (router.decision.decide, through `router attack`'s white-box view), with or without
    erase-and-check."""

    def __init__(self, classifier, policy, catalogue, encoder, depth: int):
        self.view = WhiteBoxView(classifier, policy, catalogue, encoder)
        self.policy, self.depth = policy, depth

    def small(self, decision) -> bool:
        return decision.model not in (None, self.policy.fallback)

    def checked(self, texts: list[str]) -> list[tuple]:
        """Per text: (the erase-and-check decision, the decisions of the prompt and each erased copy)."""
        groups = [erased(t, self.depth) for t in texts]
        flat = self.view.decisions([v for g in groups for v in g])
        out, start = [], 0
        for group in groups:
            part = flat[start:start + len(group)]
            start += len(group)
            out.append((next((d for d in part if self.small(d)), part[0]), part))
        return out

    def observe(self, texts) -> Observation:
        """What `router attack`'s search reads (a WhiteBoxView of the rule): small or large, and the best margin."""
        checked = self.checked(list(texts))
        to_small = np.array([self.small(d) for d, _ in checked])
        margin = np.array([max(margin_of(d.confidence, d.thresholds, d.eligible) for d in part) for _, part in checked])
        return Observation(~to_small, to_small, np.zeros(len(checked), bool), margin)


def clean_changes(router: Router, prompts: list[str]) -> dict:
    """On clean prompts: how often some erased copy decides otherwise than the prompt itself."""
    checked = router.checked(prompts)
    large = [d for d, part in checked if not router.small(part[0])]
    small = [part for d, part in checked if router.small(part[0])]
    down = sum(router.small(d) for d in large)
    up = sum(any(not router.small(x) for x in part[1:]) for part in small)
    return {"prompts": len(prompts), "large": len(large), "small": len(small),
            "large_with_a_small_copy": down / max(len(large), 1), "small_with_a_large_copy": up / max(len(small), 1),
            "any_disagreement": (down + up) / len(prompts)}


def served(table, features, classifier_for, policy, catalogue, encoder, depth: int, seeds: list[int]) -> dict:
    """Quality kept and cost saved on half-table splits, without and with the rule."""
    scores, costs, models = table.scores(), table.costs(), table.models
    out = {"plain": [], "erase_and_check": []}
    for seed in seeds:
        n = len(table)
        test = np.flatnonzero(np.random.default_rng(seed).permutation(n) < n // 2)
        clf = classifier_for(np.setdiff1d(np.arange(n), test))
        router = Router(clf, policy, catalogue, encoder, depth)
        texts = [table.prompts[i] for i in test]
        chosen = {"plain": router.view.decisions(texts), "erase_and_check": [d for d, _ in router.checked(texts)]}
        for name, decisions in chosen.items():
            j = np.array([models.index(d.model or policy.fallback) for d in decisions])
            out[name].append({"quality_kept": float(scores[test, j].sum() / scores[test, -1].sum()),
                              "cost_saved": float(1 - costs[test, j].sum() / costs[test, -1].sum()),
                              "large_share": float(np.mean(j == len(models) - 1))})
    return out


def attacks(router: Router, prompts: list[str], vocabularies: dict, depth: int, seed: int = 5) -> list[dict]:
    rng = random.Random(seed)
    test = rng.sample([p for p in prompts if held_out(p)], 100)
    search = rng.sample([p for p in prompts if not held_out(p)], 16)
    runs = []
    for vocabulary in ("tokens", "natural"):
        for direction, length in ((UP, depth), (UP, depth + 4), (DOWN, depth)):
            gadget = find_gadget(router, search, direction, vocabularies[vocabulary], length=length, candidates=24,
                                 seed=seed, progress=True)
            rates = flip_rates(router, test, gadget.text)
            runs.append({"vocabulary": vocabulary, "direction": direction, "length": length, "gadget": gadget.text,
                         "flipped": rates[direction], "clean_small": rates["clean_small"],
                         "clean_large": rates["clean_large"]})
            print(json.dumps(runs[-1]), flush=True)
    return runs


def render(r: dict) -> str:
    c, s = r["clean"], r["served"]
    mean = lambda rows, k: f"{np.mean([x[k] for x in rows]):.1%} ({np.ptp([x[k] for x in rows]):.1%})"  # noqa: E731
    lines = ["# Erase-and-check against cost escalation (issue 14)", "",
             f"Command: `.venv/bin/python bench/erase_and_check.py --out bench --depth {r['depth']}`. Shipped router "
             "(knn k=64) and serve_config.yaml's policy, guard off; the rule decides on the prompt and its copies "
             f"with the first 1..{r['depth']} words erased (each keeping 3 words), taking the cheapest.", "",
             f"Clean prompts of the default table ({c['prompts']}, which the shipped router was trained on): "
             f"{c['large_with_a_small_copy']:.1%} of the "
             f"{c['large']} that go to the large model have an erased copy that a small model gets, and "
             f"{c['small_with_a_large_copy']:.1%} of the {c['small']} that go to a small model have one that goes "
             f"large: as a detector (flag a prompt when any copy disagrees) it would flag {c['any_disagreement']:.1%} "
             "of clean prompts (the issue allows 2%).", "",
             f"Served on half-table splits (knn k=64 refitted on the other half; mean (range) of seeds {r['seeds']}):",
             "", "| rule | quality kept | cost saved | to the large model |", "|---|---|---|---|"]
    for name, rows in s.items():
        lines.append(f"| {name.replace('_', '-')} | {mean(rows, 'quality_kept')} | {mean(rows, 'cost_saved')} | "
                     f"{mean(rows, 'large_share')} |")
    lines += ["", "White-box search against the rule itself (`router attack`'s settings; the 100 held-out prompts, "
              f"{r['attacks'][0]['clean_small']} of them on a small model and {r['attacks'][0]['clean_large']} on "
              "the large one under the rule):", "",
              "| words | direction | gadget length | flipped | gadget |", "|---|---|---|---|---|"]
    for a in r["attacks"]:
        lines.append(f"| {a['vocabulary']} | {a['direction']} | {a['length']} | {a['flipped']:.1%} | {a['gadget']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for erase_and_check.md and .json")
    parser.add_argument("--depth", type=int, default=10, help="words erased at most (default 10)")
    parser.add_argument("--seeds", type=int, default=3, help="half-table splits (default 3)")
    args = parser.parse_args()
    if args.depth < 1 or args.seeds < 1:
        parser.error("--depth and --seeds must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    policy, shipped, catalogue, encoder = _router(str(ROOT / "serve_config.yaml"))
    policy = _with_guard(policy, False)
    table = load_outcomes(TABLE)
    prompts = list(dict.fromkeys(table.prompts))
    features, _ = table_features(table, encoder)
    router = Router(shipped, policy, catalogue, encoder, args.depth)
    result = {"depth": args.depth, "seeds": list(range(args.seeds)), "clean": clean_changes(router, prompts)}
    result["served"] = served(table, features,
                              lambda rows: fit_table(table, features, rows, make_family("knn", {"k": 64})),
                              policy, catalogue, encoder, args.depth, result["seeds"])
    result["attacks"] = attacks(router, prompts, vocabularies_for(encoder, [p for p in prompts if not held_out(p)]),
                                args.depth)
    (args.out / "erase_and_check.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "erase_and_check.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
