"""Issue 16's 2,000 decisions/s: does onnxruntime's transformer optimizer (operator fusion) speed up the shipped
encoder, in fp32 or int8 arithmetic?

bench/encoder_roofline.md puts a quarter of the int8 encoder's time in Transposes around attention. Fusing each
layer's attention into one operator is the usual cure (onnxruntime.transformers.optimizer, model type bert). This
script runs that optimizer on the shipped graph (weights folded to fp32, as encoder_int8.py does), records which
operators it fused, quantizes both graphs as encoder_int8.py does, and times the four in alternating rounds.

    .venv/bin/pip install onnx==1.23.2 sympy==1.14.0   # the optimizer needs both; nothing else does
    .venv/bin/python bench/encoder_fusion.py --out bench  # about 2 min; writes encoder_fusion.md and .json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_router import PROMPTS  # noqa: E402
from bench.encoder_int8 import folded_model, speed, with_model  # noqa: E402
from router.features import Encoder  # noqa: E402

VARIANTS = ("shipped", "fused", "int8", "fused int8")


def build(shipped: Path, directory: Path) -> tuple[dict[str, Path], dict[str, int]]:
    """The three rebuilt graphs, and the optimizer's count of each fused operator (those it found)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    folded = folded_model(shipped, directory)
    # opt_level 0: the optimizer's own fusions only (level 1 imports torch); MiniLM-L6: 12 heads, 384 wide
    fused = optimize_model(str(folded), model_type="bert", num_heads=12, hidden_size=384, opt_level=0)
    counts = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
    paths = {"fused": directory / "fused.onnx", "int8": directory / "int8.onnx",
             "fused int8": directory / "fused-int8.onnx"}
    fused.save_model_to_file(str(paths["fused"]))
    for source, target in ((folded, paths["int8"]), (paths["fused"], paths["fused int8"])):
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    return paths, counts


def render(r: dict) -> str:
    s = r["speed"]
    lines = ["# The shipped encoder through onnxruntime's transformer optimizer (issue 16)", "",
             "Command: `.venv/bin/pip install onnx==1.23.2 sympy==1.14.0 && .venv/bin/python bench/encoder_fusion.py "
             f"--out bench` ({r['rounds']} alternating rounds; 2 CPU cores, no GPU).", "",
             f"Operators the optimizer fused: {r['fused_operators'] or 'none'}.", "",
             "| encoder | cosine to shipped (mean / min, bench prompts) | encoder alone, prompts/s (best / median) "
             "| whole decisions batched 32, /s (best / median) | decisions vs shipped (best / median) |", "|---|---|---|---|---|"]
    base = s["shipped"]["decisions_per_s"]
    for name in VARIANTS:
        e, d, c = s[name]["encoder_prompts_per_s"], s[name]["decisions_per_s"], r["cosine"][name]
        lines.append(f"| {name} | {c['mean']:.4f} / {c['min']:.4f} | {e['best']} / {e['median']} | "
                     f"{d['best']} / {d['median']} | {d['best'] / base['best']:.2f}x / {d['median'] / base['median']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for encoder_fusion.md and .json")
    parser.add_argument("--rounds", type=int, default=10, help="alternating speed rounds (default 10)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    try:
        import onnx  # noqa: F401
        import sympy  # noqa: F401
    except ImportError:
        sys.exit("bench/encoder_fusion.py needs onnx and sympy: .venv/bin/pip install onnx==1.23.2 sympy==1.14.0")
    from models.catalogue import load_catalogue
    from models.fetch import verified_path

    args.out.mkdir(parents=True, exist_ok=True)
    shipped = Encoder(threads=2)
    with tempfile.TemporaryDirectory() as tmp:
        paths, counts = build(verified_path(load_catalogue().encoder.weights[0]), Path(tmp))
        encoders = {"shipped": shipped, **{name: with_model(shipped, paths[name]) for name in VARIANTS[1:]}}
        reference = shipped.encode(PROMPTS)
        cosine = {}
        for name, encoder in encoders.items():
            c = (encoder.encode(PROMPTS) * reference).sum(axis=1)
            cosine[name] = {"mean": float(c.mean()), "min": float(np.min(c))}
        result = {"rounds": args.rounds, "fused_operators": counts, "cosine": cosine,
                  "speed": speed(encoders, args.rounds)}
    (args.out / "encoder_fusion.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "encoder_fusion.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
