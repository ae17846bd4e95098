"""The moderation specialist: alt-profanity-check's TF-IDF + calibrated linear SVM (scikit-learn).

Its files are joblib pickles, and loading a pickle runs code. They are loaded only after `verified_path` has
checked each file's sha256 against the catalogue, so only the exact published files are ever unpickled.
"""
from __future__ import annotations

from pathlib import Path

from models.catalogue import ModerationEntry
from models.fetch import verified_path


class ModerationModel:
    def __init__(self, entry: ModerationEntry, weights_dir: Path | None = None):
        import joblib

        model_file, vectorizer_file = (verified_path(w, weights_dir) for w in entry.weights)
        self.model = joblib.load(model_file)  # sha256-verified above
        self.vectorizer = joblib.load(vectorizer_file)  # sha256-verified above
        self.name = entry.name

    def probabilities(self, texts: list[str]) -> list[float]:
        """P(offensive or profane) for each text."""
        return self.model.predict_proba(self.vectorizer.transform(texts))[:, 1].tolist()
