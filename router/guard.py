"""The gadget guard: flags prompts that carry a routing "confounder gadget" from their embedding alone.

A gadget ("Rerouting LLM Routers", Shafran et al., 2025) is a short token sequence prepended to a query that
steers a learned router. RerouteGuard (Zhang et al., 2026) detects such prompts from their embeddings; this is
the same idea at the size of this router: a logistic regression on the router's own MiniLM embedding (already
computed, so a dot product per request), trained by `router guard train` on clean prompts against prompts
carrying gadgets that the white-box search found. Saved as JSON arrays, never a pickle.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GUARD_FORMAT = "ensemble-router/guard/v1"


@dataclass
class GadgetGuard:
    coef: np.ndarray          # (embedding dims,)
    intercept: float
    threshold: float          # flag when P(gadget) >= this; set for a clean false-positive target in training
    metadata: dict = field(default_factory=dict)

    def probability(self, embeddings: np.ndarray) -> np.ndarray:
        """P(gadget) for each row of unit embeddings, shape (n, dims)."""
        logits = np.asarray(embeddings, np.float64) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))

    def flags(self, embeddings: np.ndarray) -> np.ndarray:
        return self.probability(embeddings) >= self.threshold

    def check_encoder(self, router_encoder: str, catalogue_encoder: str) -> None:
        """ValueError unless the guard was trained on the embeddings the router reads (`router guard train` records
        them; older guards were all trained on the catalogue's encoder)."""
        own = self.metadata.get("encoder") or catalogue_encoder
        if own != router_encoder:
            raise ValueError(f"the guard reads {own} embeddings and the router reads {router_encoder}; retrain the "
                             "guard on this policy with `router guard train`")

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"format": GUARD_FORMAT, "coef": [round(float(c), 6) for c in self.coef],
                                          "intercept": self.intercept, "threshold": self.threshold,
                                          "metadata": self.metadata}, separators=(",", ":")))

    @classmethod
    def load(cls, path: str | Path, dims: int | None = None) -> "GadgetGuard":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read the gadget guard: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != GUARD_FORMAT:
            raise ValueError(f"{path}: not a gadget guard (format must be {GUARD_FORMAT!r})")
        try:
            guard = cls(np.asarray(data["coef"], np.float64), float(data["intercept"]), float(data["threshold"]),
                        data.get("metadata", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: malformed gadget guard: {exc}") from None
        if guard.coef.ndim != 1 or (dims is not None and guard.coef.shape[0] != dims):
            raise ValueError(f"{path}: the guard reads {guard.coef.shape} features; the router's embedding has {dims}")
        return guard
