"""Offline decisions made by the function that serves (router.decision.decide), row by row, so that reports,
calibration and the policy what-if see exactly what the endpoint would do: the policy's cost order with its
overrides, its eligibility rules, its thresholds and its out-of-distribution setting."""
from __future__ import annotations

import numpy as np

from models.catalogue import Catalogue
from router.decision import decide
from router.policy import Policy


def check_models(models: list[str], policy: Policy, source: str) -> None:
    missing = [m for m in models if m not in policy.models]
    if missing:
        raise ValueError(f"{source}: the policy has no entry for table model(s) {missing}")


def decide_rows(models: list[str], probs: np.ndarray, tasks: list[str], tokens, policy: Policy, catalogue: Catalogue,
                ood_distances: np.ndarray | None = None, ood_threshold: float | None = None,
                suspected: np.ndarray | None = None) -> np.ndarray:
    """The column (index into `models`) that decide() picks for each row. `suspected`: the gadget guard's flag per
    row, as the serving path passes it. A row that gets no model (too long for every model, or refused by the
    guard's `reject`) counts as the fallback's: the metrics score one model per row."""
    column = {m: j for j, m in enumerate(models)}
    chosen = np.empty(len(probs), dtype=int)
    for i, row in enumerate(probs):
        distance = None if ood_distances is None else float(ood_distances[i])
        decision = decide(dict(zip(models, map(float, row))), tasks[i], int(tokens[i]), policy, catalogue,
                          distance, ood_threshold, suspected is not None and bool(suspected[i]))
        chosen[i] = column[decision.model or policy.fallback]
    return chosen
