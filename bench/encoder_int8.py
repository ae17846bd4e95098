"""Issue 16's 2,000 decisions/s: is the shipped encoder at this machine's limit, and what would int8 arithmetic cost
in routing?

The shipped all-MiniLM-L6-v2 file stores int8 weights but computes in fp32: each MatMul's weight is Cast and
scaled first, and onnxruntime folds that back to fp32 weights when it loads the file. onnxruntime's dynamic
quantization (per-channel int8 weights, uint8 activations quantized per call) computes the MatMuls in int8 (VNNI
here). This script builds that model from the shipped file, then measures, in one run:
- speed: the encoder alone and whole batched decisions (RoutingService.route_many, 32 a batch) on the bench's short
  chat prompts, shipped against int8, alternating rounds;
- fidelity: the cosine between the two embeddings of every prompt of the default table;
- routing: the shipped router fed int8 embeddings (decisions that change under the shipped policy), and the
  shipped family (knn k=64) cross-validated on each embedding (out-of-fold AIQ, 5 folds, 3 seeds).

    .venv/bin/pip install onnx==1.23.2      # quantize_dynamic needs it; nothing else does
    .venv/bin/python bench/encoder_int8.py --out bench   # about 2 min; writes encoder_int8.md and .json
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_router import PROMPTS  # noqa: E402
from router.classifier import feature_matrix  # noqa: E402
from router.features import Encoder  # noqa: E402
from router.offline.outcomes import load_outcomes  # noqa: E402
from router.offline.select import out_of_fold, sweep_aiq  # noqa: E402
from router.policy import load_policy  # noqa: E402
from router.service import RouteRequest, RoutingService  # noqa: E402

TABLE = ROOT / "data" / "outcomes" / "default.csv"


def folded_model(shipped: Path, directory: Path) -> Path:
    """The shipped graph with its weights folded to fp32 (onnxruntime's basic optimisations, saved): what the shipped
    file computes, with every MatMul weight a plain fp32 initializer."""
    import onnxruntime as ort

    folded = directory / "folded.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    ort.InferenceSession(str(shipped), options, providers=["CPUExecutionProvider"])
    return folded


def int8_model(shipped: Path, directory: Path) -> Path:
    """The folded graph dynamically quantized: per-channel int8 weights, so each output column keeps its own scale."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = directory / "minilm-int8-dynamic.onnx"
    quantize_dynamic(str(folded_model(shipped, directory)), str(quantized), weight_type=QuantType.QInt8,
                     per_channel=True)
    return quantized


def with_model(encoder: Encoder, model: Path) -> Encoder:
    import onnxruntime as ort

    other = copy.copy(encoder)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    other.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return other


def speed(encoders: dict[str, Encoder], rounds: int, total: int = 640, batch: int = 32,
          policies: dict[str, dict] | None = None) -> dict:
    """Prompts/s of the encoder alone and of whole batched decisions, per encoder, best of alternating rounds.
    `policies`: the policy each encoder decides under (default: the shipped one)."""
    texts = [PROMPTS[i % len(PROMPTS)] for i in range(total)]
    requests = [RouteRequest(t, 20) for t in texts]
    services = {}
    for name, encoder in encoders.items():
        services[name] = RoutingService(encoder)
        services[name].apply_policy((policies or {}).get(name) or load_policy().model_dump(mode="json"))
        services[name].route_many(requests[:batch])  # warm-up
    out = {name: {"encoder_prompts_per_s": [], "decisions_per_s": []} for name in encoders}
    for _ in range(rounds):
        for name, encoder in encoders.items():
            started = time.perf_counter()
            encoder.encode(texts, batch_size=batch)
            out[name]["encoder_prompts_per_s"].append(total / (time.perf_counter() - started))
            started = time.perf_counter()
            for i in range(0, total, batch):
                services[name].route_many(requests[i:i + batch])
            out[name]["decisions_per_s"].append(total / (time.perf_counter() - started))
    return {name: {k: {"best": round(max(v)), "median": round(float(np.median(v)))} for k, v in d.items()}
            for name, d in out.items()}


def table_features(table, encoders: dict[str, Encoder]) -> tuple[dict, dict[str, np.ndarray]]:
    """Each encoder's feature rows for every row of the table, and the fidelity of the second encoder's embeddings
    to the first's (cosine over the table's unique prompts)."""
    prompts = list(dict.fromkeys(table.prompts))
    vectors = {name: e.encode(prompts) for name, e in encoders.items()}
    first, second = vectors.values()
    cosine = (first * second).sum(axis=1)
    index = {p: i for i, p in enumerate(prompts)}
    rows = [index[p] for p in table.prompts]
    tokens = [next(iter(encoders.values())).count_tokens(p) for p in table.prompts]
    fidelity = {"prompts": len(prompts), "mean": float(cosine.mean()), "p1": float(np.percentile(cosine, 1)),
                "min": float(cosine.min())}
    return fidelity, {name: feature_matrix(v[rows], tokens) for name, v in vectors.items()}


def decision_changes(shipped: Encoder, int8: Encoder, prompts: list[str]) -> dict:
    """The shipped router and policy, unchanged, deciding every table prompt from each encoder's embedding."""
    service = RoutingService(shipped)
    service.apply_policy(load_policy().model_dump(mode="json"))
    tokens = [shipped.count_tokens(p) for p in prompts]
    requests = [RouteRequest(p, t) for p, t in zip(prompts, tokens)]
    decided = {}
    for name, encoder in (("shipped", shipped), ("int8", int8)):
        rows = feature_matrix(encoder.encode(prompts), tokens)
        decided[name] = service.decide_many(service.live, rows, requests)
    changed = sum(a.model != b.model for a, b in zip(decided["shipped"], decided["int8"]))
    large = service.live.policy.fallback
    return {"prompts": len(prompts), "changed": changed, "changed_share": changed / len(prompts),
            "large_share": {name: float(np.mean([d.model == large for d in ds])) for name, ds in decided.items()}}


def cross_validated(table, features: dict[str, np.ndarray], seeds: list[int]) -> dict:
    scores, costs, rows = table.scores(), table.costs(), np.arange(len(table.frame))
    out = {}
    for name, feats in features.items():
        values = [sweep_aiq(out_of_fold(table, feats, rows, "knn", {"k": 64}, 5, seed), scores, costs, table.models)
                  for seed in seeds]
        out[name] = {"aiq_per_seed": [round(v, 4) for v in values], "aiq_mean": round(float(np.mean(values)), 4)}
    return out


def render(r: dict) -> str:
    s, f, d, cv = r["speed"], r["fidelity"], r["decisions"], r["cross_validated"]
    lines = ["# The encoder in int8 arithmetic: speed against routing (issue 16)", "",
             "Command: `.venv/bin/pip install onnx==1.23.2 && .venv/bin/python bench/encoder_int8.py --out bench` "
             f"({r['rounds']} alternating rounds; {r['machine']}).", "",
             "| encoder | encoder alone, prompts/s (best / median) | whole decisions batched 32, /s (best / median) |",
             "|---|---|---|"]
    for name in ("shipped", "int8"):
        e, dd = s[name]["encoder_prompts_per_s"], s[name]["decisions_per_s"]
        lines.append(f"| {name} | {e['best']} / {e['median']} | {dd['best']} / {dd['median']} |")
    lines += ["", f"- Speed-up, int8 over shipped (medians): encoder {r['speedup']['encoder']:.2f}x, whole decisions "
              f"{r['speedup']['decisions']:.2f}x. The issue's goal is 2,000 decisions/s.",
              f"- Embedding fidelity over the {f['prompts']} table prompts, cosine int8 vs shipped: mean {f['mean']:.4f}, "
              f"1st percentile {f['p1']:.4f}, min {f['min']:.4f}. (The shipped int8-weight file vs fp32 MiniLM: "
              "0.9995–0.9997, ../shared/MODELS.md.)",
              f"- The shipped router and policy, unchanged, fed int8 embeddings: {d['changed']} of {d['prompts']} "
              f"decisions change ({d['changed_share']:.1%}); large-model share {d['large_share']['shipped']:.1%} -> "
              f"{d['large_share']['int8']:.1%}.",
              f"- knn k=64 cross-validated on the default table (out-of-fold AIQ, seeds {r['seeds']}): shipped "
              f"{cv['shipped']['aiq_mean']:.4f} {cv['shipped']['aiq_per_seed']}, int8 {cv['int8']['aiq_mean']:.4f} "
              f"{cv['int8']['aiq_per_seed']}.",
              f"- The quantized file's sha256 (a shipped version would pin it): `{r['int8_sha256']}`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for encoder_int8.md and .json")
    parser.add_argument("--rounds", type=int, default=3, help="alternating speed rounds (default 3)")
    parser.add_argument("--seeds", type=int, default=3, help="cross-validation seeds (default 3)")
    args = parser.parse_args()
    if args.rounds < 1 or args.seeds < 1:
        parser.error("--rounds and --seeds must be at least 1")
    try:
        import onnx  # noqa: F401
    except ImportError:
        sys.exit("bench/encoder_int8.py needs the onnx package: .venv/bin/pip install onnx==1.23.2")
    args.out.mkdir(parents=True, exist_ok=True)
    shipped = Encoder(threads=2)
    from models.catalogue import load_catalogue
    from models.fetch import verified_path

    with tempfile.TemporaryDirectory() as tmp:
        model = int8_model(verified_path(load_catalogue().encoder.weights[0]), Path(tmp))
        digest = hashlib.sha256(model.read_bytes()).hexdigest()
        int8 = with_model(shipped, model)
        encoders = {"shipped": shipped, "int8": int8}
        table = load_outcomes(TABLE)
        fidelity, features = table_features(table, encoders)
        result = {"machine": "2 CPU cores, no GPU", "rounds": args.rounds, "seeds": list(range(args.seeds)),
                  "int8_sha256": digest, "speed": speed(encoders, args.rounds), "fidelity": fidelity,
                  "decisions": decision_changes(shipped, int8, list(dict.fromkeys(table.prompts))),
                  "cross_validated": cross_validated(table, features, list(range(args.seeds)))}
    s = result["speed"]
    result["speedup"] = {"encoder": s["int8"]["encoder_prompts_per_s"]["median"] / s["shipped"]["encoder_prompts_per_s"]["median"],
                         "decisions": s["int8"]["decisions_per_s"]["median"] / s["shipped"]["decisions_per_s"]["median"]}
    (args.out / "encoder_int8.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "encoder_int8.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
