"""Choose the router family and its settings by k-fold cross-validation on the training rows alone.

Folds are grouped by prompt text (a prompt that repeats never sits on both sides). Every candidate (each
family's `grid` of settings) is fitted on k-1 folds and scores the held-out fold; the criterion is the area under
the threshold sweep's own cost-quality curve over those out-of-fold scores, so the choice rewards a router that is
good at every price, not at one threshold. RouterBench's AIQ (router/offline/metrics.py) is the same area under the
curve's convex hull, which credits mixing two operating points at random; a threshold router reaches only its own
points, and on RouteLLM's benchmarks the plain area chose as well or better on 11 of 12 splits (worse by 0.005
on one; README, bench/routellm/auto_results.md). AIQ stays beside it in the table. Ties go to
the earlier candidate (simpler families come first). With `ensemble=True` (not the default: it did not win on
RouteLLM's benchmarks), one more candidate joins: a blend of the single families that greedy ensemble selection
picks on those out-of-fold scores, cross-validated like the rest. `repeats` > 1 averages over several fold draws
(not the default either: on those benchmarks it picked the same family on 8 of 12 splits and was no better where
it differed). No test row is ever read here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from router.families import FAMILIES, make_family
from router.offline import metrics as M
from router.offline.outcomes import OutcomeTable

AUTO = "auto"
CRITERION = ("area under the threshold sweep's own cost-quality curve (no hull), on out-of-fold predictions, "
             "grouped by prompt")
AIQ_CRITERION = "AIQ (RouterBench) of the threshold sweep on out-of-fold predictions, grouped by prompt"


@dataclass
class Selection:
    family: str
    params: dict
    criterion: str
    folds: int
    table: list[dict] = field(default_factory=list)  # one row per candidate: family, params, aiq, apgr-like stats
    oof: np.ndarray | None = None                      # the chosen candidate's out-of-fold P(adequate)

    def as_dict(self) -> dict:
        return {"family": self.family, "params": self.params, "criterion": self.criterion, "folds": self.folds,
                "cross_validation": self.table}


def domains_of(table: OutcomeTable) -> np.ndarray:
    """The label the domain prior learns: MMLU's subject, else the eval set, else the task."""
    for column in ("subject", "eval_name", "task"):
        if column in table.frame.columns and table.frame[column].astype(str).str.len().gt(0).all():
            return table.frame[column].astype(str).to_numpy()
    return np.full(len(table), "all")


def answer_lengths_of(table: OutcomeTable) -> np.ndarray | None:
    """log(1 + output tokens) of the costliest model's answers (its `|output_tokens` column), NaN where unknown;
    None without that column. A training-only target: serving never sees an answer before it routes."""
    column = table.models[-1] + "|output_tokens"
    if column not in table.frame.columns:
        return None
    tokens = pd.to_numeric(table.frame[column], errors="coerce").to_numpy(float)
    return np.log1p(np.where(tokens > 0, tokens, np.nan))


def tasks_of(table: OutcomeTable) -> list[str] | None:
    return table.frame["task"].astype(str).tolist() if "task" in table.frame.columns else None


def prompt_folds(prompts: list[str], folds: int, seed: int) -> np.ndarray:
    """A fold number per row; rows with the same prompt text share a fold."""
    unique = sorted(set(prompts))
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[i]: n % folds for n, i in enumerate(order)}
    return np.array([fold_of[p] for p in prompts])


def candidates(family: str, also: Sequence[str] = (), measured: bool = False) -> list[tuple[str, dict]]:
    """Each setting to cross-validate: every family `auto` includes (plus `also`), or the one named. `measured`
    adds the settings each of those families keeps in `measured_grid` (measured, left out of auto)."""
    for name in [family, *also]:
        if name != AUTO and name not in FAMILIES:
            raise ValueError(f"unknown router family {name!r}; known: {sorted(FAMILIES)} or {AUTO!r}")
    names = [n for n in FAMILIES if FAMILIES[n].in_auto or n in also] if family == AUTO else [family]
    return [(name, dict(params)) for name in names
            for params in FAMILIES[name].grid + (FAMILIES[name].measured_grid if measured else [])]


def out_of_fold(table: OutcomeTable, features: np.ndarray, rows: np.ndarray, name: str, params: dict,
                folds: int, seed: int, augmented=None, fold: np.ndarray | None = None) -> np.ndarray:
    """(len(rows), m) P(adequate) for `rows`, each predicted by a model fitted on the other folds of `rows`.
    With `augmented` (router.offline.hardening.Augmented), a fold trains on those rows of it that copy its rows.
    `fold` (0 .. folds-1 per row of `rows`) replaces the folds by prompt, e.g. to hold out whole sources."""
    from router.offline.train import fit_table

    texts = table.prompts
    fold = prompt_folds([texts[i] for i in rows], folds, seed) if fold is None else np.asarray(fold)
    train_table, train_features, copy_fold = table, features, None
    if augmented is not None:  # a copy goes with its prompt's fold; a copy of a row outside `rows` goes nowhere
        fold_of = dict(zip(rows.tolist(), fold.tolist()))
        train_table, train_features = augmented.table, augmented.features
        copy_fold = np.array([fold_of.get(int(o), -1) for o in augmented.origin])
    probs = np.zeros((len(rows), len(table.models)))
    for k in range(folds):
        held = fold == k
        if held.any() and (~held).any():
            train = rows[~held] if copy_fold is None else np.flatnonzero((copy_fold != k) & (copy_fold >= 0))
            clf = fit_table(train_table, train_features, train, make_family(name, params))
            probs[held] = clf.predict_proba(features[rows[held]], [texts[i] for i in rows[held]])
    return probs


def sweep_curve(probs: np.ndarray, scores: np.ndarray, costs: np.ndarray, models: list[str]) -> np.ndarray:
    """(cost, quality) of the threshold sweep over these predictions, plus always-cheapest."""
    from router.offline.report import sweep

    points = sweep(probs, scores, costs, models, num_results=20)
    return np.array([[p.cost, p.quality] for p in points] + [[costs[:, 0].sum(), scores[:, 0].mean()]])


def curve_area(curve: np.ndarray) -> float:
    """Trapezoid area under a cost-quality curve's own points, divided by its largest cost (AIQ's normalisation,
    without the hull)."""
    curve = np.asarray(curve, dtype=float)
    curve = curve[np.argsort(curve[:, 0], kind="stable")]
    top = float(curve[:, 0].max())
    return float(np.trapezoid(curve[:, 1], curve[:, 0]) / top) if top > 0 else float("nan")


def sweep_measures(probs: np.ndarray, scores: np.ndarray, costs: np.ndarray, models: list[str]) -> dict:
    """The selection criterion (`area`) and RouterBench's AIQ of one threshold sweep."""
    curve = sweep_curve(probs, scores, costs, models)
    return {"area": curve_area(curve), "aiq": M.aiq([curve])[0]}


def sweep_aiq(probs: np.ndarray, scores: np.ndarray, costs: np.ndarray, models: list[str]) -> float:
    return M.aiq([sweep_curve(probs, scores, costs, models)])[0]


def select_family(table: OutcomeTable, features: np.ndarray, rows: np.ndarray, family: str = AUTO,
                  folds: int = 5, seed: int = 0, ensemble: bool = False, criterion: str = "area",
                  repeats: int = 1, also: Sequence[str] = (), measured: bool = False) -> Selection:
    """The family (and settings) to train on `rows`, chosen by cross-validation on `rows` alone. `ensemble` (off:
    it did not win on RouteLLM's benchmarks, README "What was tried") adds an ensemble-selected blend with auto.
    `criterion`: "area" (the product's), or "aiq" (the earlier one, kept to measure against). `repeats` > 1 runs
    the k folds that many times with other fold seeds and ranks by the mean, to damp the fold draw's noise.
    `also` adds families that auto leaves out (`in_auto` False) to its candidates, to measure them; `measured`
    adds the settings that families keep out of auto (`measured_grid`)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if len(rows) < folds * 2:
        raise ValueError(f"{len(rows)} training rows are too few for {folds}-fold cross-validation")
    options = candidates(family, also, measured)
    scores, costs = table.scores()[rows], table.costs()[rows]
    best, best_value, best_oof, rows_out, oofs = None, -np.inf, None, [], []
    with_ensemble = ensemble and family == AUTO
    progress = tqdm(total=len(options) + with_ensemble, desc="cross-validate", unit="candidate",
                    disable=len(options) == 1)

    def score(name: str, params: dict, how: str) -> None:
        nonlocal best, best_value, best_oof
        runs = [out_of_fold(table, features, rows, name, params, folds, seed + r) for r in range(repeats)]
        per_run = [sweep_measures(oof_run, scores, costs, table.models) for oof_run in runs]
        measures = {key: float(np.mean([m[key] for m in per_run])) for key in per_run[0]}
        value, oof = measures[criterion], runs[0]
        label = make_family(name, params).label()
        rows_out.append({"family": name, "params": params, "label": label, "area": round(measures["area"], 6),
                         "aiq": round(measures["aiq"], 6), "how": how})
        oofs.append((name, params, value, oof))
        if value > best_value + 1e-12:
            best, best_value, best_oof = (name, params), value, oof
        progress.update()

    for name, params in options:
        score(name, params, "grid")
    if with_ensemble:  # near-equal families: an ensemble of them may beat the one that CV happens to rank first
        members = ensemble_members(oofs, table.scores()[rows], scores, costs, table.models, criterion)
        if len(members) > 1 and {"members": members} not in [p for n, p in options if n == "blend"]:
            score("blend", {"members": members}, "ensemble selection")
    progress.close()
    named = CRITERION if criterion == "area" else AIQ_CRITERION
    if repeats > 1:
        named += f", mean of {repeats} fold draws"
    return Selection(best[0], best[1], named, folds, rows_out, best_oof)


def ensemble_members(oofs: list[tuple], adequacy: np.ndarray, scores: np.ndarray, costs: np.ndarray,
                     models: list[str], criterion: str = "area") -> list[dict]:
    """Greedy forward ensemble selection (Caruana et al., ICML 2004) over each single family's best setting: start
    from the best, add the family whose out-of-fold scores raise the blend's `criterion` (the selection's: its
    values in `oofs` are on the same scale) most, stop when none does. The
    blend is the one `Blend` serves (mean quantile, then a per-model Platt scaling), here on the same out-of-fold
    scores; the chosen members are then cross-validated as a real `blend` like any other candidate."""
    best_of: dict[str, tuple] = {}
    for name, params, value, oof in oofs:
        if name != "blend" and (name not in best_of or value > best_of[name][1]):
            best_of[name] = (params, value, oof)
    ranked = sorted(best_of.items(), key=lambda kv: -kv[1][1])
    if len(ranked) < 2:
        return []
    quantiles = {name: _column_quantiles(oof) for name, (_, _, oof) in ranked}
    chosen, chosen_value = [ranked[0][0]], ranked[0][1][1]
    while True:
        trials = [(sweep_measures(_platt_blend([quantiles[m] for m in chosen + [name]], adequacy), scores, costs,
                                  models)[criterion], name) for name, _ in ranked if name not in chosen]
        if not trials or max(trials)[0] <= chosen_value + 1e-6:
            break
        chosen_value, name = max(trials)
        chosen.append(name)
    return [{"name": name, "params": best_of[name][0]} for name in chosen]


def _column_quantiles(probs: np.ndarray) -> np.ndarray:
    """Each score's quantile among its model column's scores (as Blend's references do)."""
    ranks = np.zeros(probs.shape)
    for j in range(probs.shape[1]):
        ordered = np.sort(probs[:, j])
        ranks[:, j] = np.searchsorted(ordered, probs[:, j], side="right") / len(ordered)
    return ranks


def _platt_blend(member_quantiles: list[np.ndarray], adequacy: np.ndarray) -> np.ndarray:
    from router.families.base import adequate_labels, sigmoid
    from router.families.blend import _platt  # Blend's own per-model scaling

    blended = np.mean(member_quantiles, axis=0)
    labels = adequate_labels(adequacy)
    platt = np.vstack([_platt(blended[:, j], labels[:, j]) for j in range(blended.shape[1])])
    return sigmoid(blended * platt[:, 0] + platt[:, 1])


def format_table(selection: Selection) -> str:
    lines = [f"cross-validation ({selection.folds} folds, grouped by prompt); criterion: {selection.criterion}"]
    key = "aiq" if selection.criterion.startswith(AIQ_CRITERION) else "area"
    for row in sorted(selection.table, key=lambda r: -r[key]):
        mark = "*" if (row["family"], row["params"]) == (selection.family, selection.params) else " "
        how = "  (ensemble selection)" if row.get("how") == "ensemble selection" else ""
        lines.append(f" {mark} {row['label']:<40} area {row['area']:.4f}  AIQ {row['aiq']:.4f}{how}")
    return "\n".join(lines)
