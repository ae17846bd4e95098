"""Routing metrics, each implemented as its authors define it (sources cited per function).

All take plain arrays so they can be checked against hand-computed cases.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    strong_pct: float  # share of calls sent to the strong model, in percent
    quality: float     # mean quality of the routed answers (RouteLLM reports accuracy in percent)


def routellm_operating_points(strong_scores, weak_quality, strong_quality, num_results: int = 10,
                              scale: float = 100.0) -> list[OperatingPoint]:
    """RouteLLM's evaluation sweep (lm-sys/RouteLLM, routellm/evals/benchmarks.py, `evaluate`):
    thresholds are the bin edges of `pd.qcut(strong_win_rates, num_results)` (the 0, 1/n, ..., 1 quantiles,
    linear interpolation, duplicates kept); a prompt goes to the strong model when its score >= threshold,
    except at the last edge, where it must be > threshold (so that point sends no call to the strong model).
    `scale` = 100 reports quality in percent as RouteLLM does for MMLU/GSM8K; use 1 for MT-Bench scores."""
    s = np.asarray(strong_scores, dtype=float)
    weak_quality = np.asarray(weak_quality, dtype=float)
    strong_quality = np.asarray(strong_quality, dtype=float)
    thresholds = np.quantile(s, np.linspace(0.0, 1.0, num_results + 1))
    points = []
    for i, t in enumerate(thresholds):
        to_strong = s >= t if i != len(thresholds) - 1 else s > t
        quality = np.where(to_strong, strong_quality, weak_quality).mean() * scale
        points.append(OperatingPoint(float(t), float(to_strong.mean() * 100.0), float(quality)))
    return points


def _sorted(points: list[OperatingPoint]) -> tuple[np.ndarray, np.ndarray]:
    ordered = sorted(points, key=lambda p: p.strong_pct)  # stable, as pandas sort_values on one column
    return np.array([p.strong_pct for p in ordered]), np.array([p.quality for p in ordered])


def routellm_auc(points: list[OperatingPoint]) -> float:
    """RouteLLM `auc_metric` (routellm/evals/evaluate.py): trapezoid of quality over strong_pct/100."""
    x, y = _sorted(points)
    return float(np.trapezoid(y, x / 100.0))


def routellm_apgr(points: list[OperatingPoint], weak_quality: float, strong_quality: float) -> float:
    """RouteLLM `apgr_metric` (routellm/evals/evaluate.py): (AUC - AUC_weak) / (AUC_strong - AUC_weak), where
    AUC_weak and AUC_strong integrate the constant single-model qualities over the same strong_pct points.
    Quality arguments use the same scale as the points. Undefined (nan) when both models score the same."""
    x, _ = _sorted(points)
    weak_auc = float(np.trapezoid(np.full(len(x), weak_quality), x / 100.0))
    strong_auc = float(np.trapezoid(np.full(len(x), strong_quality), x / 100.0))
    if strong_auc == weak_auc:
        return float("nan")
    return (routellm_auc(points) - weak_auc) / (strong_auc - weak_auc)


def routellm_cpt(points: list[OperatingPoint], pct: float, weak_quality: float, strong_quality: float) -> float:
    """RouteLLM `pct_call_metric` (routellm/evals/evaluate.py), CPT(x%): the strong-call percentage at which the
    router recovers x of the quality gap, by `np.interp(x*(strong-weak)+weak, quality, strong_pct)` over the
    points sorted by strong_pct (np.interp assumes the quality column is increasing, as RouteLLM does)."""
    x, y = _sorted(points)
    return float(np.interp(pct * (strong_quality - weak_quality) + weak_quality, y, x))


def pgr(quality: float, weak_quality: float, strong_quality: float) -> float:
    """Performance gap recovered (RouteLLM paper, arXiv:2406.18665 v4, Eq. 3): (r - r_weak) / (r_strong - r_weak)."""
    return (quality - weak_quality) / (strong_quality - weak_quality)


def paper_apgr(points: list[OperatingPoint], weak_quality: float, strong_quality: float, budgets: int = 10) -> float:
    """The paper's APGR (arXiv:2406.18665 v4, Eq. 4): PGR integrated over the call budget c in [0, 1],
    approximated as in the paper on `budgets` equal intervals; PGR at each budget is read off the
    router's curve by linear interpolation in strong_pct."""
    x, y = _sorted(points)
    grid = np.linspace(0.0, 100.0, budgets + 1)
    gaps = np.array([pgr(q, weak_quality, strong_quality) for q in np.interp(grid, x, y)])
    return float(np.trapezoid(gaps, grid / 100.0))


def routellm_optimal_quality(weak_quality, strong_quality, strong_fraction: float, scale: float = 100.0) -> float:
    """RouteLLM `get_optimal_accuracy` (benchmarks.py, MMLU/GSM8K): the oracle spends up to strong_fraction*N
    strong calls on prompts that only the strong model gets right."""
    weak_quality = np.asarray(weak_quality, dtype=float)
    strong_quality = np.asarray(strong_quality, dtype=float)
    bonus = np.sort(np.clip(strong_quality - weak_quality, 0, None))[::-1]
    calls = int(np.floor(len(bonus) * strong_fraction))
    return float((weak_quality.sum() + bonus[:calls].sum()) / len(bonus) * scale)


def oracle_index(scores: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """RouterBench's oracle (Hu et al. 2024, arXiv:2403.12031, Sec. 3): the best-performing model per prompt,
    and among equals the cheapest."""
    best = scores.max(axis=1, keepdims=True)
    return np.where(np.isclose(scores, best), costs, np.inf).argmin(axis=1)


@dataclass(frozen=True)
class RoutingAccuracy:
    accuracy: float       # chose the oracle's model
    over_routing: float   # chose a model as good as the oracle's, but costlier
    under_routing: float  # chose a model that scored below the best available


def routing_accuracy(chosen: np.ndarray, scores: np.ndarray, costs: np.ndarray) -> RoutingAccuracy:
    """Accuracy against RouterBench's oracle, with the misses split: over-routing paid for a costlier model than
    needed, under-routing picked a model that did worse than one available. The three shares add up to 1."""
    rows = np.arange(len(chosen))
    oracle = oracle_index(scores, costs)
    got = scores[rows, chosen]
    best = scores[rows, oracle]
    correct = (chosen == oracle) | (np.isclose(got, best) & np.isclose(costs[rows, chosen], costs[rows, oracle]))
    under = ~np.isclose(got, best) & (got < best)
    over = ~correct & ~under
    n = max(1, len(chosen))
    return RoutingAccuracy(float(correct.sum() / n), float(over.sum() / n), float(under.sum() / n))


def confusion_matrix(chosen: np.ndarray, scores: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Counts of prompts by (oracle model, chosen model): rows are the oracle's pick (RouterBench's oracle,
    as in routing_accuracy), columns the router's. Cells right of the diagonal over-route when models are
    ordered cheapest first; the diagonal can still hold an equal-cost tie that routing_accuracy counts right."""
    n_models = scores.shape[1]
    oracle = oracle_index(scores, costs)
    matrix = np.zeros((n_models, n_models), dtype=int)
    np.add.at(matrix, (oracle, np.asarray(chosen, dtype=int)), 1)
    return matrix


def quality_and_cost(chosen: np.ndarray, scores: np.ndarray, costs: np.ndarray) -> tuple[float, float]:
    rows = np.arange(len(chosen))
    return float(scores[rows, chosen].mean()), float(costs[rows, chosen].sum())


def savings(chosen: np.ndarray, scores: np.ndarray, costs: np.ndarray, large: int, router_cost: float = 0.0) -> dict:
    """Cost saved against always-large (net of the router's own cost) and the share of its quality kept."""
    quality, cost = quality_and_cost(chosen, scores, costs)
    large_quality = float(scores[:, large].mean())
    large_cost = float(costs[:, large].sum())
    return {"quality": quality, "cost": cost + router_cost, "large_quality": large_quality, "large_cost": large_cost,
            "cost_saved": 1.0 - (cost + router_cost) / large_cost if large_cost else 0.0,
            "quality_kept": quality / large_quality if large_quality else float("nan")}


def nondecreasing_convex_hull(points: np.ndarray) -> np.ndarray:
    """RouterBench's non-decreasing convex hull (evaluation/AIQ.py, get_non_descreasing_convex_hull_of),
    re-implemented: sort by cost; each interior point is lifted to the highest chord between two points that
    span it (the upper concave envelope); the first point is kept, the last one only if it does not fall below
    the envelope's last point; then any point lower than the one before it is dropped."""
    pts = np.asarray(points, dtype=float)
    pts = pts[np.argsort(pts[:, 0], kind="stable")]
    x, y = pts[:, 0], pts[:, 1]
    lifted: dict[float, float] = {}
    for k in range(len(pts)):
        spans = [(i, j) for i in range(len(pts)) for j in range(i, len(pts)) if x[i] < x[k] < x[j]]
        if not spans:
            continue
        best = max(max(np.interp(x[k], [x[i], x[j]], [y[i], y[j]]) for i, j in spans), y[k])
        lifted[x[k]] = max(best, lifted.get(x[k], -np.inf))
    hull = sorted(lifted.items())
    if x[-1] not in lifted and (not hull or y[-1] >= hull[-1][1]):
        hull.append((x[-1], y[-1]))
    if x[0] not in lifted:
        hull.insert(0, (x[0], y[0]))
    hull = np.array(hull, dtype=float)
    hull = hull[np.argsort(hull[:, 0], kind="stable")]
    drop = [i for i in range(1, len(hull)) if hull[i, 1] < hull[i - 1, 1]]
    return np.delete(hull, drop, axis=0)


def aiq(curves: list[np.ndarray]) -> list[float]:
    """RouterBench's AIQ (Hu et al. 2024, arXiv:2403.12031, Sec. 3; evaluation/AIQ.py, calc_AIQ) for routers
    compared together: each router's (cost, quality) points become their non-decreasing convex hull, every hull
    is extended flat to the largest cost among them, and AIQ = trapezoid area under the hull / that largest
    cost. Convention: as in RouterBench's code, the area starts at each hull's own lowest cost, not at 0."""
    hulls = [nondecreasing_convex_hull(c) for c in curves]
    max_cost = max(float(h[:, 0].max()) for h in hulls)
    extended = [np.vstack([h, [max_cost, h[-1, 1]]]) for h in hulls]
    return [float(np.trapezoid(h[:, 1], h[:, 0]) / max_cost) if max_cost > 0 else float("nan") for h in extended]


def expected_calibration_error(predicted, observed, bins: int = 10) -> tuple[float, list[dict]]:
    """ECE with equal-width bins (Naeini et al. 2015; Guo et al. 2017, Eq. 3):
    sum over bins of (share of samples in the bin) * |observed rate - mean predicted probability|.
    Returns the ECE and the reliability diagram's bins. A prediction of exactly 1.0 falls in the last bin."""
    p = np.asarray(predicted, dtype=float)
    o = np.asarray(observed, dtype=float)
    index = np.minimum((p * bins).astype(int), bins - 1)
    ece, diagram = 0.0, []
    for b in range(bins):
        mask = index == b
        if not mask.any():
            continue
        conf, acc = float(p[mask].mean()), float(o[mask].mean())
        ece += mask.mean() * abs(acc - conf)
        diagram.append({"bin": b, "count": int(mask.sum()), "mean_predicted": conf, "observed": acc})
    return float(ece), diagram
