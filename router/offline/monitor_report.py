"""`router monitor`: read a window of the decision store, analyse it (router/offline/monitor.py), write HTML + PNG +
JSON in the style of `router report`, and say what fired."""
from __future__ import annotations

import base64
import html
import json
import os
import time
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from router.offline.monitor import Reference, analyse, iso, parse_time, training_reference, window_reference
from router.offline.report import write_files
from router.store.schema import decisions, feedback
from router.store.store import (DEFAULT_URL, URL_ENV, embedding_encoder_column, open_engine,
                                 profile_column)

COLUMNS = ("request_id", "at", "model", "chosen", "rule", "task", "scores", "fallback", "cascade", "prompt_embedding",
           "prompt_text", "response_toxicity")  # and the encoder (0003) and profile (0004) columns, where present
FEEDBACK_COLOURS = {"liked": "tab:green", "disliked": "tab:red", "none": "tab:blue"}


# --- reading ------------------------------------------------------------------------------------------------------
def resolve_url(url: str | None) -> str:
    """An explicit --url wins, then $ROUTER_STORE_URL, then the SQLite default."""
    return url or os.environ.get(URL_ENV) or DEFAULT_URL


def shown_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


class StoreWindows:
    """Read-only access to a decision store: its extent and the rows of a time window, with their feedback."""

    def __init__(self, url: str, catalogue_encoder: str):
        self.url, self.catalogue_encoder = url, catalogue_encoder
        if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).expanduser().exists():
            raise ValueError(f"no decision store at {url[len('sqlite:///'):]} (from --url or ${URL_ENV})")
        self.engine = open_engine(url)
        try:
            with self.engine.connect() as connection:
                self.total, self.first, self.last = connection.execute(
                    select(func.count(), func.min(decisions.c.at), func.max(decisions.c.at))).one()
        except SQLAlchemyError as exc:
            raise ValueError(f"store {shown_url(url)} cannot be read as a decision store: "
                             f"{str(exc).splitlines()[0]}") from None
        if not self.total:
            raise ValueError(f"store {shown_url(url)} holds no decisions yet")

    def rows(self, since: float, until: float) -> list[dict]:
        encoder = embedding_encoder_column(self.engine, self.catalogue_encoder)
        query = select(*(decisions.c[c] for c in COLUMNS), encoder, profile_column(self.engine),
                       feedback.c.score.label("feedback_score"), feedback.c.rating) \
            .join(feedback, feedback.c.request_id == decisions.c.request_id, isouter=True) \
            .where(decisions.c.at >= since, decisions.c.at < until).order_by(decisions.c.at)
        with self.engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(query)]

    def extent(self) -> str:
        return f"{self.total} decisions from {iso(self.first)} to {iso(self.last)}"

    def close(self) -> None:
        self.engine.dispose()


def of_encoder(rows: list[dict], encoder: str) -> tuple[list[dict], int]:
    """The rows with only `encoder`'s prompt embeddings kept (another encoder's vectors share the size but not the
    space: a router on the static encoder once served), and how many lost theirs."""
    others = 0
    kept = []
    for row in rows:
        if row.get("prompt_embedding") and row["prompt_embedding_encoder"] != encoder:
            row, others = {**row, "prompt_embedding": None}, others + 1
        kept.append(row)
    return kept, others


def artifact_reference(clf, path: Path) -> Reference:
    """The router artifact's training prompts (its out-of-distribution keys) as the reference."""
    if clf.ood_keys is None or not len(clf.ood_keys):
        raise ValueError(f"router artifact {path} keeps no training prompt embeddings (ood keys): retrain it with "
                         "`router train`, or compare with an earlier window (--reference window)")
    return training_reference(clf.ood_keys, f"training prompts of {path}")


def _window(args, now: float) -> tuple[float, float]:
    since, until = parse_time(args.since, now), parse_time(args.until, now)
    if since >= until:
        raise ValueError(f"--since {args.since} ({iso(since)}) must be before --until {args.until} ({iso(until)})")
    return since, until


def _reference_window(args, since: float, until: float, now: float) -> tuple[float, float]:
    """Default: the window of the same length just before the monitored one."""
    r_until = parse_time(args.reference_until, now) if args.reference_until else since
    r_since = parse_time(args.reference_since, now) if args.reference_since else r_until - (until - since)
    if r_since >= r_until:
        raise ValueError(f"the reference window {iso(r_since)} .. {iso(r_until)} is empty: --reference-since must "
                         "be before --reference-until")
    return r_since, r_until


def monitor_command(args) -> tuple[dict, dict[str, Path]]:
    """Run the monitor as `router monitor` asks; (the report, the files written)."""
    from models.catalogue import load_catalogue
    from router.classifier import AdequacyClassifier
    from router.policy import load_policy

    if args.reference == "training" and (args.reference_since or args.reference_until):
        raise ValueError("--reference-since/--reference-until compare with an earlier window: add --reference window")
    clusters = None if args.clusters == "auto" else _clusters(args.clusters)
    now = time.time()
    since, until = _window(args, now)
    policy = load_policy(args.policy)
    url = resolve_url(args.url)
    clf = AdequacyClassifier.load(policy.classifier_path())
    catalogue_encoder = load_catalogue().encoder.name
    encoder = clf.encoder_name or catalogue_encoder  # the live router's features: only its embeddings compare
    stages = tqdm(total=7, desc="monitor", unit="step", disable=None, leave=False)
    store = StoreWindows(url, catalogue_encoder)
    try:
        stages.set_postfix_str("reading the window")
        rows, others = of_encoder(store.rows(since, until), encoder)
        stages.update()
        if args.reference == "training":
            reference = artifact_reference(clf, policy.classifier_path())
        else:
            r_since, r_until = _reference_window(args, since, until, now)
            reference_rows, _ = of_encoder(store.rows(r_since, r_until), encoder)
            reference = window_reference(reference_rows, f"the window {iso(r_since)} .. {iso(r_until)}")
        stages.update()
        extent = store.extent()
    finally:
        store.close()
    permutation_bar = tqdm(total=policy.monitor.permutations, desc="MMD permutations", disable=None, leave=False)

    def step(name: str) -> None:
        stages.set_postfix_str(name)
        stages.update()

    try:
        found = analyse(rows, reference, policy.monitor, clusters, policy.fallback, args.seed, step,
                        permutation_bar.update)
    finally:
        permutation_bar.close()
        stages.close()
    if not rows:
        found["notes"].insert(0, f"no decisions between {iso(since)} and {iso(until)}; the store holds {extent}")
    if others:
        found["notes"].append(f"{others} rows of the window carry another encoder's prompt embedding (not {encoder}'s, "
                              "the router's): they count, but are left out of drift and problem regions")
    report = {"title": "decision-store monitor", "store": shown_url(url),
              "window": {"since": iso(since), "until": iso(until)},
              "reference": {"kind": reference.kind, "label": reference.label,
                            "rows": None if reference.rows is None else len(reference.rows)},
              "policy": {"path": str(args.policy), "version": policy.version, "classifier": str(policy.classifier_path())},
              "thresholds": policy.monitor.model_dump(), **found}
    return report, write_report(report, Path(args.out))


def _clusters(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise ValueError(f"--clusters {text!r}: give auto or a whole number of clusters") from None
    if k < 2:
        raise ValueError(f"--clusters {k}: at least 2")
    return k


# --- writing ------------------------------------------------------------------------------------------------------
def plot(report: dict, path: Path) -> None:
    """The prompt map coloured by feedback; each cluster's problem score; cluster shares against the reference;
    the best small model's score histogram."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ((ax_map, ax_rank), (ax_share, ax_conf)) = plt.subplots(2, 2, figsize=(14, 11))
    m = report["map"]
    if m["reference"]:
        ref = np.array(m["reference"])
        ax_map.scatter(ref[:, 0], ref[:, 1], s=8, color="lightgrey", label=f"reference ({report['reference']['kind']})")
    if m["window"]:
        xy, fb = np.array(m["window"]), np.array(m["feedback"])
        for label, colour in FEEDBACK_COLOURS.items():
            shown = fb == label
            if shown.any():
                ax_map.scatter(xy[shown, 0], xy[shown, 1], s=14, color=colour, alpha=0.8, label=f"window: {label}")
        ranks = np.array(m["cluster_rank"]) if m["cluster_rank"] else None
        if ranks is not None:
            for r in range(1, min(5, ranks.max()) + 1):
                centre = xy[ranks == r].mean(axis=0)
                ax_map.annotate(f"#{r}", centre, fontsize=12, weight="bold")
    ax_map.set_title("prompts, first two principal components of the window; #n = problem-region rank", fontsize=10)
    if ax_map.get_legend_handles_labels()[0]:
        ax_map.legend(fontsize=7)
    regions = report["problem_regions"]["clusters"]
    if regions:
        names = [f"#{c['rank']} ({c['size']})" for c in regions]
        ax_rank.barh(names[::-1], [c["problem_score"] for c in regions][::-1], color="tab:orange")
        ax_rank.set_xlabel("problem score: dislike rate (shrunk) + fallback rate + toxicity")
    ax_rank.set_title("problem regions of the window (cluster rank, size)", fontsize=10)
    shift = report["drift"]["clusters"]
    if shift:
        j = np.arange(shift["k"])
        ax_share.bar(j - 0.2, [c["reference_share"] for c in shift["clusters"]], 0.4, label="reference", color="grey")
        ax_share.bar(j + 0.2, [c["window_share"] for c in shift["clusters"]], 0.4, label="window", color="tab:blue")
        ax_share.set_xticks(j)
        ax_share.set_xlabel("cluster (fitted on both samples)")
        ax_share.set_ylabel("share of prompts")
        ax_share.legend(fontsize=8)
        ax_share.set_title(f"cluster shares: PSI {shift['psi']:.3f}, chi-square p {shift['p_value']:.2g}", fontsize=10)
    else:
        ax_share.set_title("cluster shares: not tested", fontsize=10)
    confidence = report["drift"]["confidence"]
    series = (confidence.get("models") or {}).get("max small-model") if confidence.get("available") else None
    if series:
        centres = (np.array(confidence["bins"][:-1]) + np.array(confidence["bins"][1:])) / 2
        for name, key, colour in (("reference", "reference_hist", "grey"), ("window", "window_hist", "tab:blue")):
            counts = np.array(series[key], float)
            ax_conf.plot(centres, counts / max(counts.sum(), 1), "o-", color=colour, label=name)
        ax_conf.set_xlabel("best small model's P(adequate)")
        ax_conf.set_ylabel("share of requests")
        ax_conf.legend(fontsize=8)
        ax_conf.set_title(f"confidence: PSI {series['psi']:.3f}, KS p {series['p_value']:.2g}", fontsize=10)
    else:
        ax_conf.set_title("confidence histograms: only against an earlier window", fontsize=10)
    fig.suptitle(f"{report['title']}: {report['window']['since']} .. {report['window']['until']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _num(x, fmt: str = ".3f") -> str:
    return "" if x is None else format(x, fmt)


def _pct(x) -> str:
    return "" if x is None else f"{x * 100:.1f}%"


def render_html(report: dict, png: Path) -> str:
    e = html.escape
    fired = "".join(f"<li>{e(f)}</li>" for f in report["fired"]) or "<li>nothing fired</li>"
    notes = "".join(f"<li>{e(n)}</li>" for n in report["notes"])
    drift = report["drift"]
    tests = []
    if drift["embeddings"]:
        d = drift["embeddings"]
        tests.append(f"<tr><td>embeddings: MMD permutation test ({d['n_reference']} vs {d['n_window']}, "
                     f"{d['permutations']} permutations)</td><td>MMD² {d['mmd2']:.4f}</td><td>{d['p_value']:.4f}</td></tr>")
    if drift["clusters"]:
        c = drift["clusters"]
        tests.append(f"<tr><td>cluster shares ({c['k']} clusters)</td><td>PSI {c['psi']:.3f}</td><td>{c['p_value']:.2g}</td></tr>")
    shares = drift["model_shares"]
    if shares.get("available"):
        tests.append(f"<tr><td>model shares (largest: {e(str(shares['largest']))})</td><td>{shares['max_abs_shift']:+.1%}"
                     f"</td><td>{shares['p_value']:.2g}</td></tr>")
    for m, c in (drift["confidence"].get("models") or {}).items():
        tests.append(f"<tr><td>scores of {e(m)} (mean {c['reference_mean']:.2f} → {c['window_mean']:.2f})</td>"
                     f"<td>PSI {c['psi']:.3f}</td><td>{c['p_value']:.2g}</td></tr>")
    unavailable = "" if shares.get("available") else f"<p>{e(shares['why'])}.</p>"
    regions = "".join(
        f"<tr><td>#{c['rank']}</td><td>{c['size']}</td><td>{c['problem_score']:.3f}</td><td>{_pct(c['dislike_rate'])} "
        f"({c['rated']} rated)</td><td>{_pct(c['fallback_rate'])}</td><td>{_num(c['toxicity'], '.2f')}</td>"
        f"<td>{e(', '.join(f'{m} {_pct(s)}' for m, s in c['model_shares'].items()))}</td>"
        f"<td>{'<br>'.join(e(x['request_id'] + ' (' + x['feedback'] + ')' + (': ' + x['prompt'][:120] if x['prompt'] else '')) for x in c['examples'])}</td>"
        f"<td>{e('; '.join(c['fired']))}</td></tr>" for c in report["problem_regions"]["clusters"])
    counts = report["counts"]
    image = base64.b64encode(png.read_bytes()).decode()
    meta = e(json.dumps({k: report[k] for k in ("store", "window", "reference", "policy", "thresholds")}, indent=1))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(report['title'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}}td:first-child{{text-align:left}}
td:nth-child(8){{text-align:left;font-size:smaller}}img{{max-width:100%;height:auto}}</style></head><body>
<h1>{e(report['title'])}</h1>
<p>Window {e(report['window']['since'])} .. {e(report['window']['until'])} of the store {e(report['store'])}:
{counts['rows']} decisions, {counts['with_embedding']} with a prompt embedding, {counts['rated']} rated
({counts['disliked']} disliked). Reference: {e(report['reference']['label'])} ({counts['reference_prompts']} prompts).</p>
<h2>What fired</h2><ul>{fired}</ul>{f'<ul>{notes}</ul>' if notes else ''}
<h2>Drift against the reference</h2><p>A shift fires when it is large (over the policy's <code>monitor:</code>
threshold) and significant (p below {report['thresholds']['drift_p_value']}). The embedding test is a permutation
test of the maximum mean discrepancy (RBF kernel, median-heuristic bandwidth); PSI is the population stability
index of cluster shares (clusters fitted on both samples) or of ten-bin score histograms.</p>{unavailable}
<table><tr><th>test</th><th>size of the shift</th><th>p-value</th></tr>{''.join(tests)}</table>
<h2>Problem regions</h2><p>The window's prompts in {report['problem_regions']['k']} KMeans clusters, ranked by a
problem score: the dislike rate (feedback score &lt; 0.5 among rated answers, shrunk toward the window's rate), plus
the fallback rate (a failed model, a cascade, or one of the rules {e(', '.join(report['thresholds']['fallback_rules']))}),
plus the mean response toxicity.</p>
<table><tr><th>rank</th><th>size</th><th>score</th><th>disliked</th><th>fallback</th><th>toxicity</th>
<th>model shares</th><th>examples</th><th>fired</th></tr>{regions}</table>
<h2>Plots</h2><img alt="prompt map by feedback, problem scores, cluster shares, confidence" src="data:image/png;base64,{image}">
<h2>Data</h2><pre>{meta}</pre></body></html>"""


def write_report(report: dict, out_dir: Path, stem: str = "monitor") -> dict[str, Path]:
    return write_files(report, out_dir, stem, plot, render_html)
