"""`router report --shadow`: the live policy against the shadow policy on the same served requests.

Every request served while a shadow policy was set carries both decisions in the store (the shadow one was
never served). The comparison: how often they agree, what each would cost, and what users said about the
answers where they differ. The shadow's cost is an estimate: its model's prices at the served answer's token
counts, since the shadow's own answer was never generated.
"""
from __future__ import annotations

from collections import Counter

from models.catalogue import Catalogue, load_catalogue


def _feedback(rows: list[dict]) -> dict:
    rated = [r["feedback_score"] for r in rows if r.get("feedback_score") is not None]
    return {"requests": len(rows), "rated": len(rated),
            "mean_score": sum(rated) / len(rated) if rated else None,
            "disliked": sum(score < 0.5 for score in rated)}


def compare(rows: list[dict], catalogue: Catalogue | None = None) -> dict:
    """Agreement, cost and feedback of live against shadow, over the store rows that carry a shadow decision."""
    catalogue = catalogue or load_catalogue()
    paired = [r for r in rows if r.get("shadow_rule") is not None]
    if not paired:
        raise ValueError(f"none of the {len(rows)} stored requests has a shadow decision: set "
                         "user_config.shadow_policy on the ingress and serve some traffic first")
    live_cost = shadow_cost = 0.0
    unpriced = 0
    for r in paired:
        live_cost += r.get("cost") or 0.0
        if r["shadow_model"] in catalogue.names():
            shadow_cost += catalogue.model(r["shadow_model"]).cost(r.get("input_tokens") or 0, r.get("output_tokens") or 0)
        else:
            unpriced += 1  # the shadow chose no model (e.g. the input was too long for it)
    agree = [r for r in paired if r["shadow_model"] == r["chosen"]]
    differ = [r for r in paired if r["shadow_model"] != r["chosen"]]
    pairs = Counter((r["chosen"], r["shadow_model"]) for r in differ)
    return {
        "requests": len(paired), "agreement": len(agree) / len(paired),
        "live_versions": sorted({r["policy_version"] for r in paired if r.get("policy_version")}),
        "shadow_versions": sorted({r["shadow_policy_version"] for r in paired if r.get("shadow_policy_version")}),
        "live_cost": live_cost, "shadow_cost_estimate": shadow_cost, "shadow_unpriced": unpriced,
        "cost_ratio": shadow_cost / live_cost if live_cost else None,
        "live_model_shares": _shares(Counter(r["chosen"] for r in paired), len(paired)),
        "shadow_model_shares": _shares(Counter(r["shadow_model"] for r in paired), len(paired)),
        "differences": [{"live": a, "shadow": b, "requests": n} for (a, b), n in pairs.most_common()],
        "feedback_where_they_agree": _feedback(agree), "feedback_where_they_differ": _feedback(differ),
        "example_differences": [r["request_id"] for r in differ[:10]],
    }


def _shares(counts: Counter, n: int) -> dict:
    return {str(model): count / n for model, count in counts.most_common()}


def summary_lines(result: dict) -> list[str]:
    differ, agree = result["feedback_where_they_differ"], result["feedback_where_they_agree"]
    ratio = result["cost_ratio"]
    lines = [f"shadow {', '.join(result['shadow_versions'])} against live {', '.join(result['live_versions'])} "
             f"on {result['requests']} requests",
             f"agreement {result['agreement']:.1%}; cost live {result['live_cost']:.6f}, shadow (estimated) "
             f"{result['shadow_cost_estimate']:.6f}" + (f" ({ratio:.2f}x)" if ratio is not None else "")]
    for d in result["differences"][:5]:
        lines.append(f"  live {d['live']} -> shadow {d['shadow']}: {d['requests']} requests")
    for name, fb in (("differ", differ), ("agree", agree)):
        mean = "n/a" if fb["mean_score"] is None else f"{fb['mean_score']:.2f}"
        lines.append(f"feedback where they {name}: {fb['rated']} of {fb['requests']} rated, mean score {mean}, "
                     f"{fb['disliked']} disliked")
    return lines


def render_html(result: dict) -> str:
    from html import escape

    rows = "".join(f"<tr><td>{escape(str(d['live']))}</td><td>{escape(str(d['shadow']))}</td>"
                   f"<td>{d['requests']}</td></tr>" for d in result["differences"])
    body = "".join(f"<p>{escape(line)}</p>" for line in summary_lines(result))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Shadow policy report</title></head><body>"
            f"<h1>Shadow policy against live</h1>{body}<h2>Where they differ</h2><table border='1'>"
            f"<tr><th>live chose</th><th>shadow chose</th><th>requests</th></tr>{rows}</table></body></html>")
