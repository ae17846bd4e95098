"""Issue 16's 2,000 decisions/s with fewer FLOPs a token: a static encoder distilled from the shipped MiniLM, against
the shipped encoder, in speed and in routing quality.

The roofline (bench/encoder_roofline.md) puts the shipped encoder's ceiling on 2 cores near 1,100 decisions/s, so
the goal needs an encoder that costs less per token. Model2Vec's recipe (Tulkens and van Dongen, "Model2Vec:
Distill a Small Fast Model from any Sentence Transformer", 2024) turns a sentence encoder into a table: each
vocabulary token's vector is the encoder's embedding of that token alone, and a prompt's embedding is the mean of
its tokens' vectors. `router/static_encoder.py` (`router train --encoder minilm-l6-v2-static`) distils the table
from the shipped, sha256-pinned MiniLM file in about 10 s (one forward pass of [CLS] token [SEP] per WordPiece
token, mean-pooled as the shipped encoder pools), kept at 384 dimensions and unweighted (in a scratch comparison on
the default table, PCA to 256 and SIF weights cross-validated no better), so nothing new is downloaded. A decision
then costs a tokenization and a table lookup. This script measures, in one run (distilling afresh, not from the
cache):
- speed: the encoder alone and whole batched decisions (RoutingService.route_many, 32 a batch, the shipped policy;
  the static side with a router that `--family auto` trained on the static embeddings of the default table) on the
  bench's short chat prompts, alternating rounds;
- fidelity: the cosine between the two embeddings of every default-table prompt;
- routing: `router train --family auto`'s own cross-validation (router.offline.select) on the default table with
  each encoder, 3 seeds: the family it picks and that family's out-of-fold area and AIQ.
RouteLLM's benchmarks under the same selection: `bench/routellm_benchmark.py --encoder static` (README).

    .venv/bin/python bench/encoder_static.py --out bench   # about 2 min; writes encoder_static.md and .json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.encoder_int8 import speed, table_features  # noqa: E402
from router.features import Encoder  # noqa: E402
from router.offline.outcomes import load_outcomes  # noqa: E402
from router.families import make_family  # noqa: E402
from router.offline.select import select_family  # noqa: E402
from router.offline.train import fit_table  # noqa: E402
from router.policy import load_policy  # noqa: E402
from router.static_encoder import static_encoder  # noqa: E402

TABLE = ROOT / "data" / "outcomes" / "default.csv"


def selection(table, features: np.ndarray, seeds: list[int]) -> list[dict]:
    rows, out = np.arange(len(table)), []
    for seed in seeds:
        chosen = select_family(table, features, rows, "auto", 5, seed)
        best = next(r for r in chosen.table if r["family"] == chosen.family and r["params"] == chosen.params)
        out.append({"seed": seed, "family": best["label"], "area": best["area"], "aiq": best["aiq"]})
    return out


def static_policy(table, features: np.ndarray, static, directory: Path) -> dict:
    """The shipped policy over a router trained on the static embeddings of the whole table (the family that
    cross-validation picks with seed 0), so whole decisions run the encoder and router that would ship."""
    rows = np.arange(len(table))
    chosen = select_family(table, features, rows, "auto", 5, 0)
    clf = fit_table(table, features, rows, make_family(chosen.family, chosen.params),
                    {"features": {"encoder": static.name}})
    clf.save(directory / "static.json")
    return {**load_policy().model_dump(mode="json"), "classifier": str(directory / "static.json")}


def render(r: dict) -> str:
    s, f, cv = r["speed"], r["fidelity"], r["selection"]
    lines = ["# A static encoder distilled from the shipped MiniLM: speed against routing (issue 16)", "",
             f"Command: `.venv/bin/python bench/encoder_static.py --out bench` ({r['rounds']} alternating rounds; "
             f"{r['machine']}; the table distilled in {r['distil_s']:.1f} s).", "",
             "| encoder | encoder alone, prompts/s (best / median) | whole decisions batched 32, /s (best / median) |",
             "|---|---|---|"]
    for name in ("shipped", "static"):
        e, d = s[name]["encoder_prompts_per_s"], s[name]["decisions_per_s"]
        lines.append(f"| {name} | {e['best']} / {e['median']} | {d['best']} / {d['median']} |")
    lines += ["", f"- Speed-up, static over shipped (medians): encoder {r['speedup']['encoder']:.1f}x, whole decisions "
              f"{r['speedup']['decisions']:.1f}x. The issue's goal is 2,000 decisions/s.",
              f"- Embedding fidelity over the {f['prompts']} table prompts, cosine static vs shipped: mean "
              f"{f['mean']:.3f}, 1st percentile {f['p1']:.3f}, min {f['min']:.3f}.", "",
              "`router train --family auto`'s cross-validation on the default table (748 prompts, 5 folds): the family "
              "it picks per seed, and that family's out-of-fold area (the selection criterion) and AIQ:", "",
              "| seed | shipped: family | area | AIQ | static: family | area | AIQ |", "|---|---|---|---|---|---|---|"]
    for a, b in zip(cv["shipped"], cv["static"]):
        lines.append(f"| {a['seed']} | {a['family']} | {a['area']:.4f} | {a['aiq']:.4f} | {b['family']} | "
                     f"{b['area']:.4f} | {b['aiq']:.4f} |")
    mean = {n: {k: float(np.mean([x[k] for x in cv[n]])) for k in ("area", "aiq")} for n in cv}
    lines += [f"| mean | | {mean['shipped']['area']:.4f} | {mean['shipped']['aiq']:.4f} | | "
              f"{mean['static']['area']:.4f} | {mean['static']['aiq']:.4f} |"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for encoder_static.md and .json")
    parser.add_argument("--rounds", type=int, default=5, help="alternating speed rounds (default 5)")
    parser.add_argument("--seeds", type=int, default=3, help="cross-validation seeds (default 3)")
    args = parser.parse_args()
    if args.rounds < 1 or args.seeds < 1:
        parser.error("--rounds and --seeds must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    shipped = Encoder(threads=2)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as empty:  # no cache: time the distillation itself
        static = static_encoder(shipped, Path(empty))
    distil_s = time.perf_counter() - started
    encoders = {"shipped": shipped, "static": static}
    table = load_outcomes(TABLE)
    fidelity, features = table_features(table, encoders)
    with tempfile.TemporaryDirectory() as directory:
        policies = {"static": static_policy(table, features["static"], static, Path(directory))}
        result = {"machine": "2 CPU cores, no GPU", "rounds": args.rounds, "distil_s": distil_s,
                  "speed": speed(encoders, args.rounds, policies=policies), "fidelity": fidelity,
                  "selection": {name: selection(table, f, list(range(args.seeds))) for name, f in features.items()}}
    s = result["speed"]
    result["speedup"] = {k: s["static"][m]["median"] / s["shipped"][m]["median"]
                         for k, m in (("encoder", "encoder_prompts_per_s"), ("decisions", "decisions_per_s"))}
    (args.out / "encoder_static.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "encoder_static.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
