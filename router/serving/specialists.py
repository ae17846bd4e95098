"""The millisecond specialists, inside the ingress process: MiniLM embeddings (/v1/embeddings, and each answer's
embedding) and the moderation classifier (/v1/moderations, and each answer's toxicity). As deployments of their
own they cost a Serve hop each (more than the model itself) and a process each (0.27 and 0.19 GiB PSS)."""
from __future__ import annotations

from models.catalogue import load_catalogue
from models.moderation import ModerationModel
from router.features import Encoder


class EmbeddingSpecialist:
    """The MiniLM sentence encoder as a task specialist: 384-d, L2-normalised embeddings, on one thread."""

    def __init__(self):
        self.encoder = Encoder(threads=1)

    def embed(self, texts: list[str]) -> dict:
        return {"vectors": self.encoder.encode(texts).tolist(),
                "tokens": sum(self.encoder.count_tokens(t) for t in texts)}


class ModerationSpecialist:
    """The toxicity/profanity classifier as a task specialist: P(offensive) per text."""

    def __init__(self):
        self.model = ModerationModel(load_catalogue().moderation)

    def probabilities(self, texts: list[str]) -> list[float]:
        return self.model.probabilities(texts)
