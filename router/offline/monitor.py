"""`router monitor`'s analysis: pure functions over decision-store rows and prompt embeddings, no I/O.

Drift: the window's prompt embeddings against a reference (the router's training prompts, or an earlier window),
by an MMD permutation test (Gretton et al. 2012, RBF kernel, median-heuristic bandwidth) and by the PSI of shared
prompt clusters; against an earlier window also the models' shares of answers and their score histograms.
Problem regions: the window's prompts clustered (KMeans), ranked by dislikes, fallbacks and toxicity.
Every shift fires only when it is both large (PSI / share over the policy's threshold) and significant (p-value).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Sequence

import numpy as np

from router.policy import Monitor

EPSILON = 0.5          # additive smoothing of every bin's count before a PSI (no log of zero)
PRIOR_RATINGS = 5.0    # a cluster's dislike rate is shrunk toward the window's by this many pseudo-ratings
SCORE_BINS = np.linspace(0.0, 1.0, 11)
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# --- inputs -------------------------------------------------------------------------------------------------------
def parse_time(text: str, now: float) -> float:
    """Unix time from an ISO time (no zone: UTC), `now`, or a time ago like 30m, 24h, 7d, 2w."""
    text = text.strip()
    if text == "now":
        return now
    relative = _RELATIVE.match(text)
    if relative:
        return now - float(relative.group(1)) * _SECONDS[relative.group(2)]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"time {text!r}: give an ISO time (2026-12-01T09:00Z), now, or a time ago such as "
                         "30m, 24h, 7d, 2w") from None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def embeddings_of(rows: Sequence[dict], dimensions: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(unit embeddings, index of their rows) of the rows that kept a prompt embedding (float32 little-endian)."""
    keep = [i for i, r in enumerate(rows) if r.get("prompt_embedding")]
    if not keep:
        return np.zeros((0, dimensions or 0), np.float32), np.zeros(0, int)
    vectors = [np.frombuffer(rows[i]["prompt_embedding"], "<f4") for i in keep]
    sizes = {len(v) for v in vectors} | ({dimensions} if dimensions else set())
    if len(sizes) > 1:
        raise ValueError(f"prompt embeddings of different sizes {sorted(sizes)}: the store and the reference come "
                         "from different encoders")
    return unit(np.vstack(vectors)), np.asarray(keep)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


@dataclass
class Reference:
    """What the window is compared with: embeddings, and the rows behind them when it is an earlier window."""
    kind: str                     # "training" or "window"
    label: str                    # where it came from, for the report
    embeddings: np.ndarray
    rows: list[dict] | None = None


def training_reference(embeddings: np.ndarray, label: str) -> Reference:
    """The router's training prompts as the reference (the artifact's stored unit embeddings)."""
    return Reference("training", label, unit(embeddings))


def window_reference(rows: list[dict], label: str, dimensions: int | None = None) -> Reference:
    return Reference("window", label, embeddings_of(rows, dimensions)[0], rows)


def feedback_of(row: dict) -> str:
    score = row.get("feedback_score")
    return "none" if score is None else ("disliked" if score < 0.5 else "liked")


def fell_back(row: dict, rules: Sequence[str]) -> bool:
    return bool(row.get("fallback")) or bool(row.get("cascade")) or row.get("rule") in rules


def auto_clusters(n: int) -> int:
    """8 clusters, fewer for small windows (about ten prompts a cluster)."""
    return int(min(8, max(2, n // 10)))


def _sample(x: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= limit else x[np.sort(rng.choice(len(x), limit, replace=False))]


def _kmeans(x: np.ndarray, k: int, seed: int):
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=min(k, len(x)), n_init=10, random_state=seed).fit(x)


# --- drift --------------------------------------------------------------------------------------------------------
def psi(reference_counts: np.ndarray, window_counts: np.ndarray) -> tuple[float, np.ndarray]:
    """Population stability index sum((w - r) ln(w / r)) over bins, with additive smoothing; and each bin's term."""
    r = (reference_counts + EPSILON) / (reference_counts.sum() + EPSILON * len(reference_counts))
    w = (window_counts + EPSILON) / (window_counts.sum() + EPSILON * len(window_counts))
    terms = (w - r) * np.log(w / r)
    return float(terms.sum()), terms


def chi_square_p(reference_counts: np.ndarray, window_counts: np.ndarray) -> float:
    """Homogeneity of two count vectors (bins empty on both sides dropped); 1.0 when there is nothing to test."""
    from scipy.stats import chi2_contingency

    table = np.vstack([reference_counts, window_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    return float(chi2_contingency(table)[1])


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int, max_sample: int, seed: int = 0,
             on_batch: Callable[[int], None] | None = None) -> dict:
    """Two-sample MMD permutation test, RBF kernel with the median-heuristic bandwidth on the pooled sample.
    Each side is subsampled to `max_sample`; p = (1 + #{permuted MMD >= observed}) / (1 + permutations)."""
    rng = np.random.default_rng(seed)
    x, y = _sample(x, max_sample, rng), _sample(y, max_sample, rng)
    pooled = np.vstack([x, y])
    squared = np.clip(2.0 - 2.0 * pooled @ pooled.T, 0.0, None)   # unit vectors: |a - b|^2 = 2 - 2 cos
    median = float(np.median(squared[np.triu_indices(len(pooled), 1)]))
    kernel = np.exp(-squared / max(median, 1e-12))
    weights = np.concatenate([np.full(len(x), 1.0 / len(x)), np.full(len(y), -1.0 / len(y))])
    observed = float(weights @ kernel @ weights)
    exceed, batch = 0, 100
    for start in range(0, permutations, batch):
        size = min(batch, permutations - start)
        shuffled = np.stack([rng.permutation(weights) for _ in range(size)], axis=1)
        exceed += int((np.einsum("ip,ip->p", kernel @ shuffled, shuffled) >= observed - 1e-12).sum())
        if on_batch:
            on_batch(size)
    return {"mmd2": observed, "p_value": (1 + exceed) / (1 + permutations), "n_reference": len(x), "n_window": len(y),
            "bandwidth_sq": median, "permutations": permutations}


def cluster_shift(reference: np.ndarray, window: np.ndarray, k: int, max_sample: int, seed: int = 0) -> dict:
    """Clusters fitted on both samples together; PSI and a chi-square test of their shares, reference vs window."""
    rng = np.random.default_rng(seed)
    reference, window = _sample(reference, max_sample, rng), _sample(window, max_sample, rng)
    model = _kmeans(np.vstack([reference, window]), k, seed)
    n = model.n_clusters
    r_counts = np.bincount(model.labels_[:len(reference)], minlength=n).astype(float)
    w_counts = np.bincount(model.labels_[len(reference):], minlength=n).astype(float)
    total, terms = psi(r_counts, w_counts)
    clusters = [{"cluster": j, "reference_share": r_counts[j] / r_counts.sum(), "window_share": w_counts[j] / w_counts.sum(),
                 "psi": float(terms[j])} for j in range(n)]
    return {"psi": total, "p_value": chi_square_p(r_counts, w_counts), "k": n, "clusters": clusters}


def shares_of(rows: Sequence[dict], key: str, missing: str) -> dict[str, float]:
    """Each value of `key`'s share of the rows (`missing` for a row without one)."""
    names = [r.get(key) or missing for r in rows]
    return {m: names.count(m) / len(names) for m in sorted(set(names))} if names else {}


def model_shares(rows: Sequence[dict]) -> dict[str, float]:
    return shares_of(rows, "model", "(none)")


def profile_note(reference_rows: Sequence[dict], window_rows: Sequence[dict], bound: float,
                 p_bound: float) -> tuple[dict, str | None]:
    """Each policy profile's share of requests in both windows (none: plain auto or a named model), and a note
    when one moved by more than `bound` with a chi-square p below `p_bound`: the models' shares follow the
    profiles clients ask for, not only their prompts, so a model share shift may be the clients' choice."""
    shares = share_shift(reference_rows, window_rows, "profile", "none")
    ref, win = shares["reference"], shares["window"]
    found = {"reference": ref, "window": win, "p_value": shares["p_value"]}
    if shares["max_abs_shift"] <= bound or shares["p_value"] >= p_bound:
        return found, None
    what = ", ".join(f"{p} {ref.get(p, 0.0):.0%} -> {win.get(p, 0.0):.0%}" for p, d in shares["shift"].items() if d)
    return found, (f"the profiles clients ask for moved ({what}; chi-square p = {shares['p_value']:.2g}): the models' "
                   "shares follow them, so a model share shift may be the clients' choice")


def share_shift(reference_rows: Sequence[dict], window_rows: Sequence[dict], key: str = "model",
                missing: str = "(none)") -> dict:
    """Each value of `key`'s share of the rows in both windows (by default the models' shares of answers), the
    largest absolute change and a chi-square p-value."""
    ref, win = (shares_of(rows, key, missing) for rows in (reference_rows, window_rows))
    names = sorted(set(ref) | set(win))
    shift = {m: win.get(m, 0.0) - ref.get(m, 0.0) for m in names}
    counts = [np.array([s.get(m, 0.0) * len(rows) for m in names]) for s, rows in ((ref, reference_rows), (win, window_rows))]
    largest = max(names, key=lambda m: abs(shift[m])) if names else None
    return {"available": True, "reference": ref, "window": win, "shift": shift, "largest": largest,
            "max_abs_shift": abs(shift[largest]) if largest else 0.0, "p_value": chi_square_p(*counts)}


def scores_by_model(rows: Sequence[dict], fallback: str | None = None) -> dict[str, np.ndarray]:
    """Each model's P(adequate) over the rows that scored it, and the best small model's ("max small-model")."""
    out: dict[str, list[float]] = {}
    for row in rows:
        scores = row.get("scores") or {}
        for m, v in scores.items():
            out.setdefault(m, []).append(float(v))
        small = [float(v) for m, v in scores.items() if m != fallback]
        if small:
            out.setdefault("max small-model", []).append(max(small))
    return {m: np.asarray(v) for m, v in out.items()}


def confidence_shift(reference_rows: Sequence[dict], window_rows: Sequence[dict], fallback: str | None = None) -> dict:
    """Per model: PSI of the score histogram (ten bins on [0, 1]) and a two-sample KS test, reference vs window."""
    from scipy.stats import ks_2samp

    ref, win = scores_by_model(reference_rows, fallback), scores_by_model(window_rows, fallback)
    models = {}
    for m in sorted(set(ref) & set(win)):
        r_counts = np.histogram(np.clip(ref[m], 0, 1), SCORE_BINS)[0].astype(float)
        w_counts = np.histogram(np.clip(win[m], 0, 1), SCORE_BINS)[0].astype(float)
        models[m] = {"psi": psi(r_counts, w_counts)[0], "p_value": float(ks_2samp(ref[m], win[m]).pvalue),
                     "reference_mean": float(ref[m].mean()), "window_mean": float(win[m].mean()),
                     "reference_hist": r_counts.astype(int).tolist(), "window_hist": w_counts.astype(int).tolist()}
    return {"available": True, "bins": SCORE_BINS.tolist(), "models": models}


# --- problem regions ----------------------------------------------------------------------------------------------
def problem_regions(rows: Sequence[dict], embeddings: np.ndarray, k: int, thresholds: Monitor, seed: int = 0) -> dict:
    """The window's prompts in k clusters, ranked by problem score = the dislike rate (shrunk toward the window's
    by PRIOR_RATINGS pseudo-ratings) + the fallback rate + the mean response toxicity (each 0..1)."""
    model = _kmeans(embeddings, k, seed)
    liked = np.array([feedback_of(r) for r in rows])
    rated = liked != "none"
    prior = float((liked[rated] == "disliked").mean()) if rated.any() else 0.0
    distance = np.linalg.norm(embeddings - model.cluster_centers_[model.labels_], axis=1)
    clusters = []
    for j in range(model.n_clusters):
        members = np.flatnonzero(model.labels_ == j)
        mine = [rows[i] for i in members]
        disliked = int((liked[members] == "disliked").sum())
        n_rated = int(rated[members].sum())
        toxicity = [r["response_toxicity"] for r in mine if r.get("response_toxicity") is not None]
        fallback_rate = float(np.mean([fell_back(r, thresholds.fallback_rules) for r in mine]))
        smoothed = (disliked + PRIOR_RATINGS * prior) / (n_rated + PRIOR_RATINGS)
        mean_toxicity = float(np.mean(toxicity)) if toxicity else None
        # examples: disliked answers first, then the prompts nearest the cluster's centre
        order = sorted(members, key=lambda i: (liked[i] != "disliked", distance[i]))[:5]
        clusters.append({
            "cluster": j, "size": len(members), "model_shares": model_shares(mine), "rated": n_rated,
            "dislike_rate": disliked / n_rated if n_rated else None, "fallback_rate": fallback_rate,
            "toxicity": mean_toxicity, "toxicity_rows": len(toxicity),
            "problem_score": smoothed + fallback_rate + (mean_toxicity or 0.0),
            "examples": [{"request_id": rows[i]["request_id"], "feedback": str(liked[i]),
                          "prompt": (rows[i].get("prompt_text") or "")[:300] or None} for i in order],
            "fired": _region_alarms(n_rated, disliked, len(members), fallback_rate, mean_toxicity, len(toxicity),
                                    thresholds)})
    clusters.sort(key=lambda c: -c["problem_score"])
    rank = {c["cluster"]: i + 1 for i, c in enumerate(clusters)}
    for c in clusters:
        c["rank"] = rank[c["cluster"]]
    return {"k": model.n_clusters, "clusters": clusters,
            "labels": [rank[int(label)] for label in model.labels_]}   # each embedding's cluster, by rank


def _region_alarms(n_rated: int, disliked: int, size: int, fallback_rate: float, toxicity: float | None,
                   toxicity_rows: int, t: Monitor) -> list[str]:
    fired = []
    if n_rated >= t.min_cluster_rows and disliked / n_rated >= t.problem_dislike_rate:
        fired.append(f"dislike rate {disliked / n_rated:.0%} of {n_rated} rated >= {t.problem_dislike_rate:.0%}")
    if size >= t.min_cluster_rows and fallback_rate >= t.problem_fallback_rate:
        fired.append(f"fallback rate {fallback_rate:.0%} of {size} >= {t.problem_fallback_rate:.0%}")
    if toxicity is not None and toxicity_rows >= t.min_cluster_rows and toxicity >= t.problem_toxicity:
        fired.append(f"mean toxicity {toxicity:.2f} >= {t.problem_toxicity:.2f}")
    return fired


# --- the whole analysis -------------------------------------------------------------------------------------------
def projection(window: np.ndarray, reference: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Both samples on the window's first two principal components (the map)."""
    from sklearn.decomposition import PCA

    if len(window) < 3:
        return np.zeros((len(window), 2)), np.zeros((len(reference), 2))
    pca = PCA(n_components=2, random_state=seed).fit(window)
    return pca.transform(window), (pca.transform(reference) if len(reference) else np.zeros((0, 2)))


def analyse(window_rows: list[dict], reference: Reference, thresholds: Monitor, clusters: int | None = None,
            fallback: str | None = None, seed: int = 0, step: Callable[[str], None] | None = None,
            on_permutations: Callable[[int], None] | None = None) -> dict:
    """The monitor's findings for one window: counts, drift, problem regions, the map, and what fired."""
    step = step or (lambda _: None)
    dims = reference.embeddings.shape[1] if len(reference.embeddings) else None
    emb, kept = embeddings_of(window_rows, dims)
    rows = [window_rows[i] for i in kept]
    notes, fired = [], []
    n_ref = len(reference.embeddings)
    counts = {"rows": len(window_rows), "with_embedding": len(rows),
              "rated": sum(feedback_of(r) != "none" for r in window_rows),
              "disliked": sum(feedback_of(r) == "disliked" for r in window_rows), "reference_prompts": n_ref}
    enough = len(rows) >= thresholds.min_window
    if not enough:
        notes.append(f"the window has {len(rows)} rows with a prompt embedding, fewer than the policy's "
                     f"monitor.min_window {thresholds.min_window}: nothing is tested and nothing fires")
    if enough and n_ref < thresholds.min_window:
        notes.append(f"the reference has {n_ref} prompts, fewer than monitor.min_window {thresholds.min_window}: "
                     "drift is not tested")
    drift: dict = {"embeddings": None, "clusters": None}
    no_served = {"available": False, "why": "the training reference has prompts, not served answers: model shares "
                 "and scores can be compared only with an earlier window (--reference window)"}
    drift["model_shares"] = drift["confidence"] = drift["profile_shares"] = no_served
    test_drift = enough and n_ref >= thresholds.min_window
    k_drift = clusters or auto_clusters(min(len(rows), n_ref))
    if test_drift:
        step("drift: MMD permutation test")
        drift["embeddings"] = mmd_test(reference.embeddings, emb, thresholds.permutations, thresholds.max_sample,
                                       seed, on_permutations)
        if drift["embeddings"]["p_value"] < thresholds.drift_p_value:
            fired.append(f"embedding drift: MMD permutation test p = {drift['embeddings']['p_value']:.4f} < "
                         f"{thresholds.drift_p_value}")
        step("drift: cluster shares (PSI)")
        drift["clusters"] = shift = cluster_shift(reference.embeddings, emb, k_drift, thresholds.max_sample, seed)
        if shift["psi"] > thresholds.cluster_psi and shift["p_value"] < thresholds.drift_p_value:
            fired.append(f"cluster shift: PSI {shift['psi']:.3f} > {thresholds.cluster_psi} over {shift['k']} "
                         f"clusters (chi-square p = {shift['p_value']:.2g})")
    if reference.rows is not None:
        step("drift: model shares and scores")
        drift["model_shares"] = shares = share_shift(reference.rows, window_rows)
        drift["confidence"] = confidence = confidence_shift(reference.rows, window_rows, fallback)
        drift["profile_shares"], moved = profile_note(reference.rows, window_rows, thresholds.model_share_shift,
                                                      thresholds.drift_p_value)
        notes += [moved] if moved else []
        if test_drift and shares["max_abs_shift"] > thresholds.model_share_shift \
                and shares["p_value"] < thresholds.drift_p_value:
            fired.append(f"model share shift: {shares['largest']} {shares['shift'][shares['largest']]:+.0%} > "
                         f"{thresholds.model_share_shift:.0%} (chi-square p = {shares['p_value']:.2g})")
        for m, c in confidence["models"].items():
            if test_drift and c["psi"] > thresholds.confidence_psi and c["p_value"] < thresholds.drift_p_value:
                fired.append(f"score shift of {m}: PSI {c['psi']:.3f} > {thresholds.confidence_psi} "
                             f"(KS p = {c['p_value']:.2g}; mean {c['reference_mean']:.2f} -> {c['window_mean']:.2f})")
    regions: dict = {"k": 0, "clusters": [], "labels": []}
    if enough:
        step("problem regions: clustering the window")
        regions = problem_regions(rows, emb, clusters or auto_clusters(len(rows)), thresholds, seed)
        fired += [f"problem region #{c['rank']} ({c['size']} prompts): {why}"
                  for c in regions["clusters"] for why in c["fired"]]
    step("map: PCA")
    rng = np.random.default_rng(seed)
    ref_shown = _sample(reference.embeddings, thresholds.max_sample, rng) if n_ref else reference.embeddings
    window_xy, ref_xy = projection(emb, ref_shown, seed)
    return {"counts": counts, "notes": notes, "fired": fired, "drift": drift,
            "problem_regions": {"k": regions["k"], "clusters": regions["clusters"]},
            "map": {"window": np.round(window_xy, 4).tolist(), "reference": np.round(ref_xy, 4).tolist(),
                    "feedback": [feedback_of(r) for r in rows], "cluster_rank": regions["labels"],
                    "request_id": [r["request_id"] for r in rows]}}
