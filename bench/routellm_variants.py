"""Lightweight router variants for the RouteLLM benchmark: each fits on a training set and returns a scorer
(features, prompts) -> score, where a higher score means "send to the strong model". Every variant is
CPU-only and scores one prompt at a time; the benchmark times the whole decision, embedding included.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from router.families.linear import hand_features  # the product's features, so the benchmark measures them

Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class TrainSet:
    x: np.ndarray        # MiniLM embedding + scaled log length (router.classifier.feature_matrix)
    prompts: np.ndarray  # prompt texts
    weak: np.ndarray     # weak model's quality per prompt
    strong: np.ndarray   # strong model's quality per prompt
    domain: np.ndarray   # MMLU subject, or the benchmark's name: the label the domain prior learns
    answer_length: np.ndarray | None = None  # log chars of the strong model's answer (GSM8K only, else NaN)

    @property
    def gain(self) -> np.ndarray:
        return self.strong - self.weak


def _lr(c: float = 1.0):
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(C=c, max_iter=3000)


def lr_adequacy(t: TrainSet, c: float = 1.0) -> Scorer:
    """1 - P(the weak model is adequate); adequacy is quality above the midpoint of the score range."""
    midpoint = (np.min(t.weak) + np.max(t.weak)) / 2.0
    model = _lr(c).fit(t.x, t.weak > midpoint)
    return lambda x, p: 1.0 - model.predict_proba(x)[:, 1]


def _signed_gain_lr(features, t: TrainSet, c: float):
    model = _lr(c).fit(features, np.sign(t.gain).astype(int))
    classes = list(model.classes_)

    def score(f):
        proba = model.predict_proba(f)
        col = lambda k: proba[:, classes.index(k)] if k in classes else 0.0  # noqa: E731
        return col(1) - col(-1)
    return score


def lr_gain(t: TrainSet, c: float = 1.0) -> Scorer:
    """P(strong right, weak wrong) - P(the reverse), a 3-class LR on the sign of the gain."""
    score = _signed_gain_lr(t.x, t, c)
    return lambda x, p: score(x)


def two_head(t: TrainSet, c: float = 0.3) -> Scorer:
    """P(strong adequate) - P(weak adequate), two binary LRs: ties train both heads instead of one class."""
    midpoint = (np.min(t.weak) + np.max(t.weak)) / 2.0
    strong, weak = _lr(c).fit(t.x, t.strong > midpoint), _lr(c).fit(t.x, t.weak > midpoint)
    return lambda x, p: strong.predict_proba(x)[:, 1] - weak.predict_proba(x)[:, 1]


def ridge_gain(t: TrainSet, alpha: float = 30.0) -> Scorer:
    """Ridge regression on the raw gain: ties count as 0, a form of label smoothing."""
    from sklearn.linear_model import Ridge
    model = Ridge(alpha=alpha).fit(t.x, t.gain)
    return lambda x, p: model.predict(x)


def knn_gain(t: TrainSet, k: int = 64, temperature: float | None = None) -> Scorer:
    """Mean gain of the k most similar training prompts (cosine over unit embeddings); optional softmax weights."""
    emb = t.x[:, :-1]

    def score(x, p):
        sims = x[:, :-1] @ emb.T
        kk = min(k, emb.shape[0] - 1)
        idx = np.argpartition(-sims, kth=kk, axis=1)[:, :kk]
        if temperature is None:
            return t.gain[idx].mean(axis=1)
        w = np.exp(np.take_along_axis(sims, idx, axis=1) / temperature)
        return (t.gain[idx] * w).sum(axis=1) / w.sum(axis=1)
    return score


def smoothed_domain_gain(gain: np.ndarray, domain: np.ndarray, domains, smoothing: float) -> np.ndarray:
    """Each domain's mean gain, shrunk towards the overall mean: (sum + smoothing * overall) / (n + smoothing)."""
    overall = float(np.mean(gain))
    return np.array([(gain[domain == d].sum() + smoothing * overall) / ((domain == d).sum() + smoothing)
                     for d in domains])


def domain_prior(t: TrainSet, smoothing: float = 10.0, lexical: bool = False) -> Scorer:
    """Per-domain prior: predict the domain (MMLU subject) from the embedding (or from TF-IDF), then take the
    expected smoothed mean gain of that domain. Smoothing shrinks small domains towards the overall mean."""
    overall = t.gain.mean()
    domains = np.unique(t.domain)
    if len(domains) < 2:
        return lambda x, p: np.full(len(p), overall)
    feats = _tfidf(t).transform if lexical else None
    model = _lr(3.0 if not lexical else 10.0).fit(feats(t.prompts) if lexical else t.x, t.domain)
    priors = smoothed_domain_gain(t.gain, t.domain, model.classes_, smoothing)
    return lambda x, p: model.predict_proba(feats(p) if lexical else x) @ priors


def tfidf_adequacy(t: TrainSet, c: float = 1.0) -> Scorer:
    """1 - P(the weak model is adequate) from TF-IDF alone: no embedding, so it decides in about a millisecond."""
    vec = _tfidf(t)
    model = _lr(c).fit(vec.transform(t.prompts), t.weak > (np.min(t.weak) + np.max(t.weak)) / 2.0)
    return lambda x, p: 1.0 - model.predict_proba(vec.transform(p))[:, 1]


def _tfidf(t: TrainSet):
    from sklearn.feature_extraction.text import TfidfVectorizer
    return TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit(t.prompts)


def tfidf_gain(t: TrainSet, c: float = 1.0, with_embedding: bool = False) -> Scorer:
    """The issue's untuned starting point (TF-IDF + LR), optionally with the MiniLM embedding appended."""
    from scipy import sparse
    vec = _tfidf(t)
    feats = (lambda x, p: sparse.hstack([vec.transform(p), sparse.csr_matrix(x)]).tocsr()) if with_embedding \
        else (lambda x, p: vec.transform(p))
    score = _signed_gain_lr(feats(t.x, t.prompts), t, c)
    return lambda x, p: score(feats(x, p))


def hand_ridge(t: TrainSet, alpha: float = 10.0) -> Scorer:
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler
    scaler = StandardScaler().fit(hand_features(t.prompts))
    model = Ridge(alpha=alpha).fit(scaler.transform(hand_features(t.prompts)), t.gain)
    return lambda x, p: model.predict(scaler.transform(hand_features(p)))


def answer_length(t: TrainSet, alpha: float = 10.0) -> Scorer:
    """Predicted length of the strong model's answer, a difficulty proxy learned from the training rows' answers
    (privileged information: the answers are a training-only target, never a feature). A long worked solution
    means many steps, where the weak model slips more often; the target is dense, unlike the binary gain."""
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler
    known = np.isfinite(t.answer_length) if t.answer_length is not None else np.zeros(len(t.prompts), bool)
    if known.sum() < 10:  # no answers in this training set (MMLU has none): a constant, i.e. no opinion
        return lambda x, p: np.zeros(len(p))
    scaler = StandardScaler().fit(hand_features(t.prompts[known]))
    feats = lambda x, p: np.hstack([scaler.transform(hand_features(p)), x])  # noqa: E731
    model = Ridge(alpha=alpha).fit(feats(t.x[known], t.prompts[known]), t.answer_length[known])
    return lambda x, p: model.predict(feats(x, p))


def hgb_gain(t: TrainSet) -> Scorer:
    """Gradient boosting on the gain (a regression, so its output is an expected gain, calibrated by construction)."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    model = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                          l2_regularization=1.0, random_state=0).fit(t.x, t.gain)
    return lambda x, p: model.predict(x)


def rank_blend(*fits: Callable[[TrainSet], Scorer]) -> Callable[[TrainSet], Scorer]:
    """Sum of quantiles, each against that scorer's scores on the training prompts: scale-free, so a kNN mean
    gain and an LR probability weigh the same, and one prompt can be scored alone (as a router must)."""
    def fit(t: TrainSet) -> Scorer:
        scorers = [f(t) for f in fits]
        references = [np.sort(s(t.x, t.prompts)) for s in scorers]
        return lambda x, p: sum(np.searchsorted(ref, s(x, p), side="right") / len(ref)
                                for s, ref in zip(scorers, references))
    return fit


# variants that read only the prompt text: the router need not embed the prompt for them
LEXICAL = {"tfidf+lr-gain", "tfidf domain-prior", "tfidf lr-adequacy", "hand-features ridge",
           "lexical blend(tfidf domain-prior,tfidf lr-gain)",
           "lexical blend(tfidf domain-prior,tfidf lr-gain,tfidf lr-adequacy)"}

VARIANTS: dict[str, Callable[[TrainSet], Scorer]] = {
    "lr-adequacy": lr_adequacy,
    "lr-gain": lr_gain,
    "lr-gain C=0.3": lambda t: lr_gain(t, c=0.3),
    "lr-gain C=3": lambda t: lr_gain(t, c=3.0),
    "two-head lr (ties train both heads)": two_head,
    "ridge-gain (ties as 0)": ridge_gain,
    "knn32-gain": lambda t: knn_gain(t, k=32),
    "knn64-gain": knn_gain,
    "knn128-gain": lambda t: knn_gain(t, k=128),
    "knn64-gain softmax-weighted": lambda t: knn_gain(t, k=64, temperature=0.05),
    "domain-prior": domain_prior,
    "tfidf+lr-gain": tfidf_gain,
    "tfidf domain-prior": lambda t: domain_prior(t, lexical=True),
    "tfidf lr-adequacy": tfidf_adequacy,
    "lexical blend(tfidf domain-prior,tfidf lr-gain)": rank_blend(lambda t: domain_prior(t, lexical=True), tfidf_gain),
    "lexical blend(tfidf domain-prior,tfidf lr-gain,tfidf lr-adequacy)": rank_blend(
        lambda t: domain_prior(t, lexical=True), tfidf_gain, tfidf_adequacy),
    "tfidf+minilm lr-gain": lambda t: tfidf_gain(t, with_embedding=True),
    "hand-features ridge": hand_ridge,
    "hist-gradient-boosting gain": hgb_gain,
    "blend(lr-gain,knn32)": rank_blend(lr_gain, lambda t: knn_gain(t, k=32)),
    "blend(knn64,domain-prior)": rank_blend(knn_gain, domain_prior),
    "blend(knn64,domain-prior,lr-adequacy)": rank_blend(knn_gain, domain_prior, lr_adequacy),
    "blend(knn64,domain-prior,hand)": rank_blend(knn_gain, domain_prior, hand_ridge),
    "blend(knn64,tfidf+minilm,domain-prior)": rank_blend(knn_gain, lambda t: tfidf_gain(t, with_embedding=True),
                                                         domain_prior),
    "blend(knn64,domain-prior,lr-adequacy,tfidf lr-adequacy)": rank_blend(knn_gain, domain_prior, lr_adequacy,
                                                                          tfidf_adequacy),
    "blend(domain-prior,lr-adequacy,tfidf lr-adequacy)": rank_blend(domain_prior, lr_adequacy, tfidf_adequacy),
    "blend(knn64,domain-prior,lr-adequacy,hand)": rank_blend(knn_gain, domain_prior, lr_adequacy, hand_ridge),
    "answer-length ridge (GPT-4 answer length, a training-only target)": answer_length,
    "blend(knn64,hand,answer-length)": rank_blend(knn_gain, hand_ridge, answer_length),
}


# costs per call for the criterion (RouteLLM's README prices, $ per million tokens): only their ratio matters
WEAK_COST, STRONG_COST = 0.24, 24.7


def outcome_table(t: TrainSet):
    """The training split as the product's outcome table: adequacy is quality above the score range's midpoint."""
    import pandas as pd

    from router.offline.outcomes import COST, OutcomeTable

    midpoint = (np.min(t.weak) + np.max(t.weak)) / 2.0
    frame = pd.DataFrame({"prompt": t.prompts, "subject": t.domain.astype(str),
                          "weak": (t.weak > midpoint).astype(float), "strong": (t.strong > midpoint).astype(float),
                          "weak" + COST: WEAK_COST, "strong" + COST: STRONG_COST,
                          # GPT-4's answer length (GSM8K only), for the `length` family: chars / 4, about tokens
                          "strong|output_tokens": np.expm1(t.answer_length) / 4.0})
    return OutcomeTable(frame, ["weak", "strong"])


def family_auto(t: TrainSet, folds: int = 5, ensemble: bool = False, criterion: str = "area",
                repeats: int = 1) -> Scorer:
    """The product's own choice (`router train --family auto`): router.offline.select picks a family and its
    settings by cross-validation on these training rows alone; the score is the strong model's predicted
    advantage, P(strong adequate) - P(weak adequate), as the product's sweep ranks (report.large_advantage).
    The scorer's `chosen` attribute names the family that was picked."""
    from router.families import make_family
    from router.offline.select import select_family
    from router.offline.train import fit_table

    table = outcome_table(t)
    rows = np.arange(len(table))
    selection = select_family(table, t.x, rows, "auto", folds, seed=0, ensemble=ensemble, criterion=criterion,
                              repeats=repeats)
    clf = fit_table(table, t.x, rows, make_family(selection.family, selection.params))

    from router.offline.report import large_advantage

    def score(x, p):
        return large_advantage(clf.predict_proba(x, list(p)))
    score.chosen = clf.family.label()
    return score


VARIANTS[AUTO_VARIANT := "auto (router train --family auto)"] = family_auto
VARIANTS["auto + ensemble selection"] = partial(family_auto, ensemble=True)  # tried, not shipped: README
VARIANTS["auto, selected by AIQ (the earlier criterion)"] = partial(family_auto, criterion="aiq")  # README
VARIANTS["auto, repeated cross-validation (3 fold draws)"] = partial(family_auto, repeats=3)  # README
