"""Offline routing-accuracy report from one outcome table: train on a split, evaluate on the held-out rows.

Everything (metrics, curve, baselines) is computed from the same table. The curve follows RouteLLM's
evaluation sweep; see router/offline/metrics.py for each definition and its source.
"""
from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from router.offline import metrics as M
from router.offline.outcomes import OutcomeTable


@dataclass
class SweepPoint:
    threshold: float  # the cut on the large model's predicted advantage
    strong_pct: float
    quality: float
    cost: float
    shares: dict[str, float]
    standing_threshold: float  # the policy that serves this point: threshold_on advantage, every threshold this


def choose(probs: np.ndarray, thresholds: np.ndarray, eligible: np.ndarray | None = None) -> np.ndarray:
    """The policy-less rule, for tables without a policy (RouteLLM's models are not in the catalogue) and for
    threshold sweeps: per row, the cheapest small model (columns are ordered by the table's cost, the last is
    the large fallback) with P >= its threshold, else the last column. With a policy, offline decisions use
    router.decision.decide itself (router/offline/decisions.py)."""
    n, m = probs.shape
    ok = probs[:, :-1] >= thresholds[None, :]
    if eligible is not None:
        ok &= eligible[:, :-1]
    first = np.where(ok.any(axis=1), ok.argmax(axis=1), m - 1)
    return first


def large_advantage(probs: np.ndarray) -> np.ndarray:
    """The router's strong score: P(the large model is adequate) - the best small model's P. Ranking by the
    large model's expected advantage, not by 1 - P(small), keeps prompts that every model fails on a small
    model (on RouteLLM's MMLU it raised APGR from 0.58-0.60 to 0.63-0.65 for the same families:
    bench/routellm_rank_score.py)."""
    return probs[:, -1] - probs[:, :-1].max(axis=1)


def at_cut(probs: np.ndarray, cut: float, last: bool = False) -> np.ndarray:
    """The sweep's choice per row at one cut: the large model when its advantage is >= cut (> at the last cut),
    else the cheapest small model whose P is within `cut` of the large model's. The serving decision makes the same
    choice under `threshold_on: advantage` with every threshold (1 - cut) / 2 (tests/test_decision.py)."""
    strong_score = large_advantage(probs)
    to_large = strong_score >= cut if not last else strong_score > cut
    near = probs[:, :-1] >= (probs[:, -1] - cut)[:, None] - 1e-12
    chosen = np.where(near.any(axis=1), near.argmax(axis=1), probs.shape[1] - 1)
    return np.where(to_large, probs.shape[1] - 1, chosen)


def sweep(probs: np.ndarray, scores: np.ndarray, costs: np.ndarray, models: list[str],
          num_results: int = 10) -> list[SweepPoint]:
    """RouteLLM's sweep generalised to several small models. The router's strong score is `large_advantage`;
    cut-points are its 0, 1/n, ..., 1 quantiles; a row goes to the large model when score >= cut (> at the
    last cut), otherwise to the cheapest small model whose P is within `cut` of the large model's (the best
    small model qualifies). With two models this is RouteLLM's sweep of that score."""
    strong_score = large_advantage(probs)
    cuts = np.quantile(strong_score, np.linspace(0.0, 1.0, num_results + 1))
    rows = np.arange(len(probs))
    points = []
    for i, cut in enumerate(cuts):
        chosen = at_cut(probs, cut, last=i == len(cuts) - 1)
        to_large = chosen == probs.shape[1] - 1
        points.append(SweepPoint(float(cut), float(to_large.mean() * 100), float(scores[rows, chosen].mean()),
                                 float(costs[rows, chosen].sum()),
                                 {m: float((chosen == j).mean()) for j, m in enumerate(models)}, (1.0 - float(cut)) / 2))
    return points


def _curve_metrics(points: list[SweepPoint], weak_q: float, strong_q: float) -> dict:
    ops = [M.OperatingPoint(p.threshold, p.strong_pct, p.quality) for p in points]
    return {"apgr": M.routellm_apgr(ops, weak_q, strong_q), "apgr_paper": M.paper_apgr(ops, weak_q, strong_q),
            "cpt50": M.routellm_cpt(ops, 0.5, weak_q, strong_q), "cpt80": M.routellm_cpt(ops, 0.8, weak_q, strong_q)}


def _operating(chosen: np.ndarray, scores: np.ndarray, costs: np.ndarray, models: list[str],
               router_cost: float = 0.0) -> dict:
    acc = M.routing_accuracy(chosen, scores, costs)
    return {**asdict(acc), **M.savings(chosen, scores, costs, len(models) - 1, router_cost), "router_cost": router_cost,
            "shares": {m: float((chosen == j).mean()) for j, m in enumerate(models)},
            "confusion": M.confusion_matrix(chosen, scores, costs).tolist()}


def evaluate(test: OutcomeTable, probs: np.ndarray, thresholds: np.ndarray, seed: int = 0, num_results: int = 10,
             router_cost: float = 0.0, chosen: np.ndarray | None = None) -> dict:
    """The report's numbers for the trained router's `probs` on `test`, beside random and the oracle.
    `chosen`: the trained router's model per row as the serving decision makes it under a policy (default: the
    policy-less rule at `thresholds`); `router_cost`: its own cost over the test rows, netted out of savings."""
    scores, costs, models = test.scores(), test.costs(), test.models
    weak_q, strong_q = float(scores[:, 0].mean()), float(scores[:, -1].mean())
    rng = np.random.default_rng(seed)
    random_probs = rng.random(probs.shape)
    trained_chosen = chosen if chosen is not None else choose(probs, thresholds)
    large_share = float((trained_chosen == len(models) - 1).mean())
    # the random router at the same share of large-model calls as the trained router
    random_cut = np.quantile(1.0 - random_probs[:, :-1].max(axis=1), 1.0 - large_share) if large_share < 1 else -np.inf
    random_chosen = choose(random_probs, np.full(len(models) - 1, 1.0 - random_cut))
    random_chosen = np.where(1.0 - random_probs[:, :-1].max(axis=1) > random_cut, len(models) - 1, random_chosen)
    oracle_chosen = M.oracle_index(scores, costs)
    routers = {}
    for name, p, chosen in (("trained", probs, trained_chosen), ("random", random_probs, random_chosen)):
        points = sweep(p, scores, costs, models, num_results)
        routers[name] = {"curve": [asdict(x) for x in points], **_curve_metrics(points, weak_q, strong_q),
                         "operating_point": _operating(chosen, scores, costs, models,
                                                       router_cost if name == "trained" else 0.0)}
    # every threshold router can also send everything to the cheapest model (thresholds 0): include that point,
    # so that all hulls on the cost-quality plane start from the same lowest cost
    cheapest = [float(costs[:, 0].sum()), float(scores[:, 0].mean())]
    curves = [np.array([[p["cost"], p["quality"]] for p in routers[name]["curve"]] + [cheapest]) for name in routers]
    for name, value in zip(routers, M.aiq(curves)):
        routers[name]["aiq"] = value
        routers[name]["hull"] = M.nondecreasing_convex_hull(curves[list(routers).index(name)]).tolist()
    calibration = {}
    for j, m in enumerate(models):
        ece, diagram = M.expected_calibration_error(probs[:, j], scores[:, j] >= 0.5)
        calibration[m] = {"ece": ece, "bins": diagram}
    report = {"n_test": len(test), "models": models, "calibration": calibration, "thresholds": dict(zip(models[:-1], map(float, thresholds))),
              "single_models": {m: {"quality": float(scores[:, j].mean()), "cost": float(costs[:, j].sum())}
                                for j, m in enumerate(models)},
              "routers": routers, "oracle": _operating(oracle_chosen, scores, costs, models)}
    if len(models) == 2:
        report["oracle"]["curve"] = [{"strong_pct": pct, "quality": M.routellm_optimal_quality(
            scores[:, 0], scores[:, 1], pct / 100, scale=1.0)} for pct in range(0, 101, 10)]
    return report


def plot(report: dict, path: Path) -> None:
    """Left: quality against the share of large-model calls (RouteLLM's view). Right: RouterBench's
    cost-quality plane, with every single model, the oracle, and the routers' threshold sweeps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    large = report["models"][-1]
    fig, ((ax, cq), (rel, conf)) = plt.subplots(2, 2, figsize=(14, 11))
    for name, style in (("trained", "o-"), ("random", "x--")):
        router = report["routers"][name]
        curve = sorted(router["curve"], key=lambda p: p["strong_pct"])
        ax.plot([p["strong_pct"] for p in curve], [p["quality"] for p in curve], style, label=f"{name} router")
        by_cost = sorted(router["curve"], key=lambda p: p["cost"])
        cq.plot([p["cost"] for p in by_cost], [p["quality"] for p in by_cost], style, label=f"{name} router")
        hull = np.array(router["hull"])
        cq.plot(hull[:, 0], hull[:, 1], ":", linewidth=2, label=f"{name}: non-decreasing convex hull, AIQ {router['aiq']:.4g}")
        op = router["operating_point"]
        ax.plot([op["shares"][large] * 100], [op["quality"]], "*", markersize=12, label=f"{name} at the policy's thresholds")
        cq.plot([op["cost"]], [op["quality"]], "*", markersize=12, label=f"{name} at the policy's thresholds")
    oracle = report["oracle"]
    if "curve" in oracle:
        ax.plot([p["strong_pct"] for p in oracle["curve"]], [p["quality"] for p in oracle["curve"]], ":", label="oracle")
    else:
        ax.plot([oracle["shares"][large] * 100], [oracle["quality"]], "D", label="oracle")
    cq.plot([oracle["cost"]], [oracle["quality"]], "D", label="oracle")
    for model, single in report["single_models"].items():
        ax.axhline(single["quality"], linestyle="--", linewidth=0.8, color="grey")
        ax.annotate(f"always {model}", (1, single["quality"]), fontsize=8, va="bottom")
        cq.plot([single["cost"]], [single["quality"]], "s", color="grey")
        cq.annotate(f"always {model}", (single["cost"], single["quality"]), fontsize=8, va="bottom")
    rel.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    for model, cal in report["calibration"].items():
        rel.plot([b["mean_predicted"] for b in cal["bins"]], [b["observed"] for b in cal["bins"]], "o-",
                 label=f"{model} (ECE {cal['ece']:.3f})")
    rel.set_xlabel("predicted P(adequate)")
    rel.set_ylabel("observed share adequate")
    rel.set_title("reliability of the classifier", fontsize=10)
    rel.legend(fontsize=7, loc="upper left")
    matrix = np.array(report["routers"]["trained"]["operating_point"]["confusion"])
    conf.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        conf.text(j, i, str(count), ha="center", va="center", color="black" if count < matrix.max() / 2 else "white")
    conf.set_xticks(range(len(report["models"])), report["models"], rotation=20, fontsize=8)
    conf.set_yticks(range(len(report["models"])), report["models"], fontsize=8)
    conf.set_xlabel("chosen by the trained router (policy thresholds)")
    conf.set_ylabel("oracle's model")
    conf.set_title("confusion matrix", fontsize=10)
    ax.set_xlabel(f"calls to the large model ({large}), %")
    cq.set_xlabel("total cost of the held-out prompts ($)")
    for axis in (ax, cq):
        axis.set_ylabel("quality (mean score)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="lower right")
    fig.suptitle(report.get("title", "routing quality against large-model calls and cost"))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _metric(x: float | None, spec: str) -> str:
    """A metric that can be undefined: APGR when the weak and strong models score the same."""
    return "undefined" if x is None or not math.isfinite(x) else format(x, spec)


def json_safe(value):
    """The report with every NaN or infinity as null: JSON has neither, and strict readers refuse Python's NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def render_html(report: dict, png: Path) -> str:
    large = report["models"][-1]
    rows = []
    for name, r in report["routers"].items():
        op = r["operating_point"]
        rows.append(f"<tr><td>{name}</td><td>{_metric(r['apgr'], '.3f')}</td><td>{_metric(r['apgr_paper'], '.3f')}</td>"
                    f"<td>{r['cpt50']:.1f}%</td><td>{r['cpt80']:.1f}%</td><td>{r['aiq']:.4g}</td><td>{_pct(op['accuracy'])}</td>"
                    f"<td>{_pct(op['over_routing'])}</td><td>{_pct(op['under_routing'])}</td>"
                    f"<td>{_pct(op['cost_saved'])}</td><td>{_pct(op['quality_kept'])}</td>"
                    f"<td>{', '.join(f'{m} {_pct(s)}' for m, s in op['shares'].items())}</td></tr>")
    oracle = report["oracle"]
    rows.append(f"<tr><td>oracle</td><td colspan=5></td><td>100.0%</td><td>0.0%</td><td>0.0%</td>"
                f"<td>{_pct(oracle['cost_saved'])}</td><td>{_pct(oracle['quality_kept'])}</td>"
                f"<td>{', '.join(f'{m} {_pct(s)}' for m, s in oracle['shares'].items())}</td></tr>")
    singles = "".join(f"<tr><td>always {html.escape(m)}</td><td>{s['quality']:.3f}</td><td>{s['cost']:.4g}</td></tr>"
                      for m, s in report["single_models"].items())
    calib = "".join(f"<tr><td>{html.escape(m)}</td><td>{c['ece']:.3f}</td></tr>" for m, c in report["calibration"].items())
    whatif = "".join(
        f"<tr><td>{html.escape(w['policy'])}</td><td>{html.escape(w['version'])}</td><td>{w['quality']:.3f}</td>"
        f"<td>{w['cost']:.4g}</td><td>{_pct(w['cost_saved'])}</td><td>{_pct(w['quality_kept'])}</td>"
        f"<td>{', '.join(f'{m} {_pct(x)}' for m, x in w['shares'].items())}</td>"
        f"<td>{'off' if w.get('guard_share') is None else _pct(w['guard_share']) + ' ' + html.escape(w['guard_action'])}</td></tr>"
        for w in report.get("what_if", []))
    whatif_html = ("<h2>Policy what-if</h2><p>Each policy's thresholds and eligibility on the same held-out prompts. "
                   "A prompt that gets no model (too long for all, or refused by the gadget guard) is counted at the "
                   "fallback.</p><table><tr><th>policy</th><th>version</th><th>quality</th><th>cost</th>"
                   "<th>cost saved</th><th>quality kept</th><th>share of calls</th><th>gadget guard: flagged, action"
                   f"</th></tr>{whatif}</table>") if whatif else ""
    rob = report.get("robustness", {})
    robust_html = ""
    if rob.get("edits"):
        cells = "".join(f"<td>{'' if rob.get(k) is None else _pct(rob[k])}</td>" for k in ("case", "whitespace", "typo", "synonym"))
        robust_html = (f"<h2>Robustness</h2><p>Share of decisions (at the policy's thresholds) that flip under one small "
                       f"edit of the prompt, on {rob['sample']} held-out prompts ({rob['edits']} edits).</p><table><tr>"
                       f"<th>overall</th><th>case</th><th>whitespace</th><th>typo</th><th>synonym</th></tr><tr>"
                       f"<td>{_pct(rob['overall'])}</td>{cells}</tr></table>")
    gadgets = rob.get("gadgets") or []
    if gadgets:
        rows = "".join(f"<tr><td>{g['direction']}</td><td><code>{html.escape(g['gadget'])}</code></td>"
                       f"<td>{_pct(g['up'])} of {g['clean_small']}</td><td>{_pct(g['down'])} of {g['clean_large']}</td>"
                       f"</tr>" for g in gadgets)
        robust_html += ("<h3>Routing gadgets</h3><p>A white-box greedy search (Shafran et al., 2025) for a 10-word "
                        "prefix that steers this router, on 16 training prompts; the share of held-out decisions it "
                        "flips from a small model to the large one (up) and back (down).</p><table><tr><th>search"
                        f"</th><th>gadget</th><th>flips up</th><th>flips down</th></tr>{rows}</table>")
    curve_rows = "".join(f"<tr><td>{p['standing_threshold']:.3f}</td><td>{p['strong_pct']:.1f}%</td>"
                         f"<td>{p['quality']:.4f}</td><td>{p['cost']:.4g}</td></tr>"
                         for p in report["routers"]["trained"]["curve"])
    curve_html = ("<h2>Trade-off curve</h2><p>The trained router's sweep, point by point. Each point is what a policy "
                  "with <code>threshold_on: advantage</code> and every small model's threshold at t serves (ties "
                  "aside): a small model answers when its standing against the large model, (1 + P(small) - "
                  "P(large)) / 2, is at least t.</p><table><tr><th>t</th><th>calls to the large model</th>"
                  f"<th>quality</th><th>cost</th></tr>{curve_rows}</table>")
    confusion = report["routers"]["trained"]["operating_point"]["confusion"]
    confusion_html = ("<h2>Confusion matrix</h2><p>The trained router at the policy's thresholds: rows are the oracle's "
                      "model, columns the router's. Right of the diagonal over-routes (a costlier model than needed); "
                      "left of it under-routes when the cheaper model did worse.</p><table><tr><th>oracle \\ chosen</th>"
                      + "".join(f"<th>{html.escape(m)}</th>" for m in report["models"]) + "</tr>"
                      + "".join(f"<tr><td>{html.escape(m)}</td>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>"
                                for m, row in zip(report["models"], confusion)) + "</table>")
    ood, selection = report.get("ood") or {}, report.get("selection") or {}
    ood_html = ("<h2>Out of distribution</h2><p>Held-out prompts farther from every training prompt than the router's "
                f"threshold ({ood['threshold']:.3f}, 1 - cosine similarity): <b>{_pct(ood['share_flagged'])}</b>. "
                "With the policy's <code>ood.enabled</code> they go to the fallback.</p>"
                ) if ood.get("share_flagged") is not None else ""
    def cv_row(r: dict) -> str:
        chosen = " (chosen)" if (r["family"], r["params"]) == (selection["family"], selection["params"]) else ""
        area = f"{r['area']:.4f}" if "area" in r else "-"  # artifacts from before the area criterion have AIQ only
        return f"<tr><td>{html.escape(r['label'])}{chosen}</td><td>{area}</td><td>{r['aiq']:.4f}</td></tr>"
    cv_rows = "".join(cv_row(r) for r in sorted(selection.get("cross_validation", []),
                                                 key=lambda r: -r.get("area", r["aiq"])))
    selection_html = (f"<h2>Router family</h2><p>Chosen by {selection['folds']}-fold cross-validation on the training "
                      f"split alone; criterion: {html.escape(selection['criterion'])}.</p><table><tr><th>candidate</th>"
                      f"<th>area</th><th>AIQ</th></tr>{cv_rows}</table>") if cv_rows else ""
    image = base64.b64encode(png.read_bytes()).decode()
    meta = html.escape(json.dumps(report.get("data", {}), indent=1))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(report.get('title', 'routing report'))}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
img{{max-width:100%;height:auto}}</style></head><body>
<h1>{html.escape(report.get('title', 'routing report'))}</h1>
<p>{report['n_test']} held-out prompts; large model <b>{html.escape(large)}</b>. APGR and CPT as RouteLLM's
evaluation code computes them (10-quantile sweep, trapezoid AUC); "APGR (paper)" integrates PGR over call budgets
(arXiv:2406.18665 Eq. 4). AIQ is RouterBench's: the area under each router's non-decreasing convex hull on the
cost-quality plane, hulls extended to the largest cost of the routers compared, divided by that cost, the area
starting at each hull's lowest cost as RouterBench's code does. Accuracy is against RouterBench's oracle (best model, cheapest among equals);
over-routing paid for a costlier model than needed, under-routing chose a model that did worse. Savings are
against always-{html.escape(large)}, net of the trained router's own cost (the encoder, priced like the catalogue's
models by parameter count: {report['routers']['trained']['operating_point']['router_cost']:.3g} in all), at the policy's thresholds {html.escape(json.dumps(report['thresholds']))}.</p>
<table><tr><th>router</th><th>APGR</th><th>APGR (paper)</th><th>CPT(50%)</th><th>CPT(80%)</th><th>AIQ</th><th>accuracy vs oracle</th>
<th>over-routing</th><th>under-routing</th><th>cost saved</th><th>quality kept</th><th>share of calls</th></tr>
{''.join(rows)}</table>
{selection_html}
{curve_html}
{confusion_html}
{ood_html}
{whatif_html}
{robust_html}
<h2>Calibration of P(adequate)</h2><p>Expected calibration error, 10 equal-width bins (Guo et al. 2017).
The reliability diagram is the lower-left plot.</p><table><tr><th>model</th><th>ECE</th></tr>{calib}</table>
<h2>Single models</h2><table><tr><th>model</th><th>quality</th><th>cost</th></tr>{singles}</table>
<h2>Plots</h2><p>Quality against large-model calls (RouteLLM's view); the cost-quality plane with each
non-decreasing convex hull (RouterBench's); the reliability diagram; the confusion matrix.</p><img alt="quality against large-model calls, the cost-quality plane, reliability and confusion" src="data:image/png;base64,{image}">
<h2>Data</h2><pre>{meta}</pre></body></html>"""


def write_files(report: dict, out_dir: Path, stem: str, draw, render) -> dict[str, Path]:
    """A report as STEM.json, STEM.png (`draw(report, path)`) and STEM.html (`render(report, png_path)`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "png": out_dir / f"{stem}.png", "html": out_dir / f"{stem}.html"}
    paths["json"].write_text(json.dumps(json_safe(report), indent=1, allow_nan=False))
    draw(report, paths["png"])
    paths["html"].write_text(render(report, paths["png"]))
    return paths


def write_report(report: dict, out_dir: Path, stem: str = "report") -> dict[str, Path]:
    return write_files(report, out_dir, stem, plot, render_html)
