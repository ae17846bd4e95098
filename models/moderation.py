"""The moderation specialist: alt-profanity-check's TF-IDF + calibrated linear SVM (scikit-learn).

Its files are joblib pickles, and loading a pickle runs code. Each file is read once, its sha256 checked against
the catalogue, and those same bytes unpickled, so only the exact published files are ever loaded.
"""
from __future__ import annotations

import io
from pathlib import Path

from models.catalogue import ModerationEntry
from models.fetch import verified_bytes


class ModerationModel:
    def __init__(self, entry: ModerationEntry, weights_dir: Path | None = None):
        import joblib

        model_bytes, vectorizer_bytes = (verified_bytes(w, weights_dir) for w in entry.weights)
        self.model = joblib.load(io.BytesIO(model_bytes))  # the bytes just checked by sha256
        self.vectorizer = joblib.load(io.BytesIO(vectorizer_bytes))  # the bytes just checked by sha256
        self.name = entry.name

    def probabilities(self, texts: list[str]) -> list[float]:
        """P(offensive or profane) for each text."""
        return self.model.predict_proba(self.vectorizer.transform(texts))[:, 1].tolist()
