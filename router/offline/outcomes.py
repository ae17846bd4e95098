"""The outcome table: one row per prompt, a score and a cost column per model (RouterBench's wide layout, extended).

Columns: sample_id, prompt, eval_name, task; per model M: M (score 0..1), M|total_cost, M|model_response,
M|input_tokens, M|output_tokens, M|latency_s; and oracle_model_to_route_to.
Every metric, plot and baseline in a report is computed from this one table.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

COST = "|total_cost"
PER_MODEL_EXTRA = ("|model_response", "|input_tokens", "|output_tokens", "|latency_s")
ORACLE = "oracle_model_to_route_to"


class OutcomeError(ValueError):
    pass


@dataclass
class OutcomeTable:
    frame: pd.DataFrame
    models: list[str]  # ordered cheapest first

    @property
    def prompts(self) -> list[str]:
        return self.frame["prompt"].tolist()

    def scores(self) -> np.ndarray:
        return self.frame[self.models].to_numpy(dtype=float)

    def costs(self) -> np.ndarray:
        return self.frame[[m + COST for m in self.models]].to_numpy(dtype=float)

    def subset(self, index) -> "OutcomeTable":
        return OutcomeTable(self.frame.iloc[index].reset_index(drop=True), self.models)

    def __len__(self) -> int:
        return len(self.frame)


def oracle_models(scores: np.ndarray, costs: np.ndarray, models: list[str]) -> list[str]:
    """RouterBench's oracle: the best-scoring model for each prompt, ties broken by the lowest cost."""
    best = scores.max(axis=1, keepdims=True)
    masked_cost = np.where(np.isclose(scores, best), costs, np.inf)
    return [models[i] for i in masked_cost.argmin(axis=1)]


def build_table(rows: list[dict], models: list[str]) -> OutcomeTable:
    frame = pd.DataFrame(rows)
    table = OutcomeTable(frame, _order_by_cost(frame, models))
    frame[ORACLE] = oracle_models(table.scores(), table.costs(), table.models)
    return table


def _order_by_cost(frame: pd.DataFrame, models: list[str]) -> list[str]:
    return sorted(models, key=lambda m: (frame[m + COST].mean(), m))


def _numeric(frame: pd.DataFrame, column: str, source: str, lo: float | None = None, hi: float | None = None) -> None:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | ~np.isfinite(values.fillna(0))
    if lo is not None:
        bad |= values < lo
    if hi is not None:
        bad |= values > hi
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        want = "a number" + (f" in [{lo:g}, {hi:g}]" if lo is not None and hi is not None else "")
        raise OutcomeError(f"{source}: row {row + 1} (file line {row + 2}), column {column!r}: "
                           f"{frame[column].iloc[row]!r} is not {want} ({int(bad.sum())} bad row(s) in that column)")
    frame[column] = values


def validate_frame(frame: pd.DataFrame, source: str, known_models: list[str] | None = None) -> OutcomeTable:
    if "prompt" not in frame.columns:
        raise OutcomeError(f"{source}: missing column 'prompt'; columns are {list(frame.columns)[:12]}")
    models = [c[: -len(COST)] for c in frame.columns if c.endswith(COST)]
    if not models:
        raise OutcomeError(f"{source}: no model columns; each model M needs a score column 'M' and a cost column "
                           f"'M{COST}' (RouterBench's layout), or give --model-costs for RouteLLM's layout")
    if len(models) < 2:
        raise OutcomeError(f"{source}: only the model {models[0]!r}; routing needs at least two models")
    if frame.empty:
        raise OutcomeError(f"{source}: the table has columns but no rows")
    for model in models:
        if model not in frame.columns:
            raise OutcomeError(f"{source}: missing column {model!r} (the score of model {model!r}, which has {model + COST!r})")
        if known_models is not None and model not in known_models:
            raise OutcomeError(f"{source}: column {model!r} names an unknown model; known models are {known_models}")
        _numeric(frame, model, source, 0.0, 1.0)
        _numeric(frame, model + COST, source, 0.0, None)
    if frame["prompt"].isna().any():
        row = int(np.flatnonzero(frame["prompt"].isna().to_numpy())[0])
        raise OutcomeError(f"{source}: row {row + 1} (file line {row + 2}), column 'prompt': empty prompt")
    frame = frame.reset_index(drop=True)
    table = OutcomeTable(frame, _order_by_cost(frame, models))
    frame[ORACLE] = oracle_models(table.scores(), table.costs(), table.models)
    return table


def from_routellm_layout(frame: pd.DataFrame, model_costs: dict[str, float], source: str) -> pd.DataFrame:
    """RouteLLM's CSV layout (`prompt`, then one True/False column per model, optional `<model>_response`)
    into the wide layout, with each model's cost per call taken from `model_costs`."""
    models = [c for c in frame.columns if c != "prompt" and not c.endswith("_response")]
    missing = [m for m in models if m not in model_costs]
    if missing:
        raise OutcomeError(f"{source}: RouteLLM layout has no costs; give a cost per call for {missing} "
                           f"(router report --model-costs NAME=COST ...)")
    out = frame[["prompt"]].copy()
    for m in models:
        text = frame[m].astype(str).str.strip().str.lower()
        booleans = text.map({"true": 1.0, "false": 0.0})
        out[m] = frame[m].astype(object).where(booleans.isna(), booleans)  # others stay as written, for the error
        out[m + COST] = float(model_costs[m])
    return out


def load_outcomes(path: str | Path, known_models: list[str] | None = None,
                  model_costs: dict[str, float] | None = None) -> OutcomeTable:
    """RouterBench's wide layout; or RouteLLM's CSV layout when `model_costs` gives each model's cost per call."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # a first row longer than the header must not become a silent index
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, keep_default_na=False, na_values=[""], index_col=False)
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
    except FileNotFoundError:
        raise OutcomeError(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError, UnicodeDecodeError,
            OSError) as exc:
        raise OutcomeError(f"{path}: not a readable CSV outcome table: {exc}") from None
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:  # pandas would rename the second one (a.1) and the table would silently lose it
        raise OutcomeError(f"{path}: duplicate column(s) {duplicates}; each column must appear once")
    if model_costs and not any(c.endswith(COST) for c in frame.columns):
        frame = from_routellm_layout(frame, model_costs, str(path))
    return validate_frame(frame, str(path), known_models)


def save_outcomes(table: OutcomeTable, path: str | Path) -> None:
    models = table.models
    fixed = [c for c in ("sample_id", "prompt", "eval_name", "task") if c in table.frame.columns]
    per_model = [m + suffix for m in models for suffix in ("", COST, *PER_MODEL_EXTRA) if m + suffix in table.frame.columns]
    rest = [c for c in table.frame.columns if c not in fixed + per_model + [ORACLE]]
    table.frame[fixed + per_model + rest + [ORACLE]].to_csv(path, index=False)
