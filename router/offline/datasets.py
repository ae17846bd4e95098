"""Public routing data shipped in data/routellm (RouteLLM, Apache-2.0), loaded as outcome tables.

Decontamination follows RouteLLM (routellm/evals/benchmarks.py): prompts listed in each benchmark's
contaminated_prompts.jsonl are dropped. Costs use the per-million-token prices of RouteLLM's paper
(arXiv:2406.18665, Sec. 5: GPT-4 $24.7, Mixtral-8x7B $0.24, blended) over an estimated prompt length
(characters / 4) plus a fixed 250-token answer, so cost ratios, not absolute dollars, carry meaning.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from router.offline.outcomes import COST, OutcomeTable, validate_frame

DATA = Path(__file__).resolve().parents[2] / "data" / "routellm"
WEAK, STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
NAMES = {WEAK: "mixtral-8x7b", STRONG: "gpt-4-1106"}
PRICE_PER_M = {"mixtral-8x7b": 0.24, "gpt-4-1106": 24.7}
ANSWER_TOKENS = 250
BENCHMARKS = ("mmlu", "gsm8k")


def _contaminated(folder: Path) -> set[str]:
    return {json.loads(line)["eval_prompt"] for line in (folder / "contaminated_prompts.jsonl").open()}


def _to_table(frame: pd.DataFrame, eval_name: str, source: str) -> OutcomeTable:
    out = pd.DataFrame({"sample_id": [f"{eval_name}-{i}" for i in range(len(frame))], "prompt": frame["prompt"].values,
                        "eval_name": eval_name, "task": eval_name,
                        "subject": frame["subject"].values if "subject" in frame else eval_name})
    tokens = out["prompt"].str.len() / 4 + ANSWER_TOKENS
    for column, name in NAMES.items():
        out[name] = frame[column].astype(str).str.lower().map({"true": 1.0, "false": 0.0}).values
        out[name + COST] = tokens * PRICE_PER_M[name] / 1e6
    return validate_frame(out, source)


def load_routellm(benchmark: str, data_dir: Path = DATA) -> OutcomeTable:
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown RouteLLM benchmark {benchmark!r}; choose one of {list(BENCHMARKS)}")
    folder = data_dir / benchmark
    if benchmark == "mmlu":
        # the subject comes from the file name (mmlu_<subject>.csv); the benchmark's domain prior learns from it
        frame = pd.concat([pd.read_csv(f).assign(subject=f.stem.removeprefix("mmlu_"))
                           for f in sorted(folder.glob("mmlu_*.csv"))], ignore_index=True)
    else:
        frame = pd.read_csv(folder / "gsm8k_responses.csv")
    frame = frame[~frame["prompt"].isin(_contaminated(folder))].reset_index(drop=True)
    return _to_table(frame, benchmark, str(folder))
