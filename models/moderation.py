"""The moderation specialist: alt-profanity-check's TF-IDF + calibrated linear SVM, computed with numpy.

Its published files are joblib pickles, and loading a pickle runs code. They are unpickled only to export their
fitted numbers, from bytes whose sha256 the catalogue pins, once per machine (`router fetch-models` does it). The
numbers go to a plain .npz beside the weights, read with allow_pickle=False. Serving reads only that file, so the
ingress never imports scikit-learn (README: 0.07 GiB less PSS and about a core-second less at its start), and
it computes what scikit-learn's predict_proba computes (tests/test_moderation.py compares the two).
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np

from models.catalogue import ModerationEntry
from models.fetch import verified_bytes, verified_path

TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern, which the vectorizer was fitted with
EXPORT_VERSION = 1
ARRAYS = ("terms", "idf", "coef", "intercept", "a", "b")


def export(entry: ModerationEntry, weights_dir: Path | None = None) -> dict[str, np.ndarray]:
    """The fitted numbers of the pinned pickles: the vocabulary in column order, its idf, and per calibrated fold
    the SVM's weights and intercept and the sigmoid's a and b. Refuses settings the numpy path does not compute."""
    import joblib

    model_bytes, vectorizer_bytes = (verified_bytes(w, weights_dir) for w in entry.weights)
    model = joblib.load(io.BytesIO(model_bytes))  # the bytes just checked by sha256
    vectorizer = joblib.load(io.BytesIO(vectorizer_bytes))  # the bytes just checked by sha256
    settings = {"lowercase": True, "strip_accents": None, "token_pattern": TOKEN.pattern, "ngram_range": (1, 1),
                "analyzer": "word", "preprocessor": None, "tokenizer": None, "norm": "l2", "use_idf": True,
                "sublinear_tf": False, "binary": False}
    differing = {k: getattr(vectorizer, k) for k, v in settings.items() if getattr(vectorizer, k) != v}
    folds = model.calibrated_classifiers_
    if differing or model.method != "sigmoid" or list(model.classes_) != [0, 1] \
            or any(len(f.calibrators) != 1 for f in folds):
        raise ValueError(f"{entry.name}: a vectorizer or calibration this module does not compute ({differing}, "
                         f"method {model.method}, classes {list(model.classes_)})")
    vocabulary = vectorizer.vocabulary_
    return {"terms": np.array(sorted(vocabulary, key=vocabulary.get)), "idf": vectorizer.idf_.astype(np.float64),
            "coef": np.vstack([f.estimator.coef_.ravel() for f in folds]).astype(np.float64),
            "intercept": np.array([f.estimator.intercept_[0] for f in folds], np.float64),
            "a": np.array([f.calibrators[0].a_ for f in folds], np.float64),
            "b": np.array([f.calibrators[0].b_ for f in folds], np.float64)}


def exported_path(entry: ModerationEntry, weights_dir: Path | None = None) -> Path:
    """Beside the weights, named by both pickles' pinned sha256, so another release is exported again."""
    folder = verified_path(entry.weights[0], weights_dir).parent
    return folder / f"{entry.name}-{'-'.join(w.sha256[:16] for w in entry.weights)}-v{EXPORT_VERSION}.npz"


def load_exported(entry: ModerationEntry, weights_dir: Path | None = None) -> dict[str, np.ndarray]:
    """The exported numbers, exported first when the file is absent or unreadable (written to a temporary name
    and renamed, so an interrupted export is never read back)."""
    path = exported_path(entry, weights_dir)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in ARRAYS}
        if arrays["coef"].shape[1] == len(arrays["terms"]) == len(arrays["idf"]):
            return arrays
    except (OSError, ValueError, KeyError):
        pass  # absent or damaged: export it again
    arrays = export(entry, weights_dir)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    tmp.replace(path)
    return arrays


class ModerationModel:
    """P(offensive or profane): TF-IDF of the text's words (l2-normalised), each calibrated fold's sigmoid of the
    SVM's score, averaged over the folds, as CalibratedClassifierCV.predict_proba does."""

    def __init__(self, entry: ModerationEntry, weights_dir: Path | None = None):
        arrays = load_exported(entry, weights_dir)
        self.column = {term: i for i, term in enumerate(arrays["terms"].tolist())}
        self.idf, self.coef, self.intercept = arrays["idf"], arrays["coef"], arrays["intercept"]
        self.a, self.b = arrays["a"], arrays["b"]
        self.name = entry.name

    def scores(self, text: str) -> np.ndarray:
        """Each fold's SVM score of one text (its intercept alone when no word is in the vocabulary)."""
        counts: dict[int, int] = {}
        for token in TOKEN.findall(text.lower()):  # stop words never entered the vocabulary: they miss here
            column = self.column.get(token)
            if column is not None:
                counts[column] = counts.get(column, 0) + 1
        if not counts:
            return self.intercept.copy()
        columns = np.fromiter(counts, np.int64, len(counts))
        weights = np.fromiter(counts.values(), np.float64, len(counts)) * self.idf[columns]
        return self.coef[:, columns] @ (weights / np.sqrt(weights @ weights)) + self.intercept

    def probabilities(self, texts: list[str]) -> list[float]:
        """P(offensive or profane) for each text."""
        return [float(np.mean(1.0 / (1.0 + np.exp(self.a * self.scores(t) + self.b)))) for t in texts]
