"""The specialists' routes, one of the route groups RouterIngress is made of: embeddings and moderation, answered
by the models inside the ingress (the large model decides moderation's uncertain band)."""
from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import numpy as np
from fastapi import Request

from router.decision import large_model_flags, moderation_needs_large_model, specialist_flags
from router.serving.errors import error_response
from router.serving.http_api import api
from router.serving.schemas import EmbeddingRequest, ModerationRequest, completion_id, moderation_result

MODERATION_PROMPT = (Path(__file__).parents[1] / "rubrics" / "moderation.txt").read_text()


class SpecialistEndpoints:
    """Needs the ingress's `_guard`, `service`, `embedder`, `moderator` and `handles`."""

    @api.post("/v1/embeddings")
    async def embeddings(self, body: EmbeddingRequest, request: Request):
        if (denied := await self._guard(request)) is not None:
            return denied
        name = self.service.catalogue.encoder.name
        if body.model not in ("auto", name):
            return error_response(404, f"model {body.model!r} does not embed; use 'auto' or {name!r}", param="model",
                          code="model_not_found")
        if body.dimensions not in (None, self.service.catalogue.encoder.dimensions):
            return error_response(400, f"{name} makes {self.service.catalogue.encoder.dimensions}-dimensional vectors",
                          param="dimensions")
        result = await asyncio.to_thread(self.embedder.embed, body.texts())
        data = []
        for i, vector in enumerate(result["vectors"]):
            value = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode() \
                if body.encoding_format == "base64" else vector
            data.append({"object": "embedding", "index": i, "embedding": value})
        return {"object": "list", "data": data, "model": name,
                "usage": {"prompt_tokens": result["tokens"], "total_tokens": result["tokens"]}}

    @api.post("/v1/moderations")
    async def moderations(self, body: ModerationRequest, request: Request):
        """The moderation specialist decides; inside the policy's uncertain band the large model decides."""
        if (denied := await self._guard(request)) is not None:
            return denied
        policy, name = self.service.live.policy, self.service.catalogue.moderation.name
        if body.model not in ("auto", name):
            return error_response(404, f"model {body.model!r} does not moderate; use 'auto' or {name!r}", param="model",
                          code="model_not_found")
        texts = body.texts()
        probabilities = await asyncio.to_thread(self.moderator.probabilities, texts)
        results = []
        for text, p in zip(texts, probabilities):
            if moderation_needs_large_model(p, policy):
                reply = await self.handles[policy.fallback].generate.remote({
                    "messages": [{"role": "user", "content": MODERATION_PROMPT.format(text=text)}],
                    "max_tokens": 8, "temperature": 0.0, "seed": 0})
                results.append(moderation_result(large_model_flags(reply["text"]), p, policy.fallback))
            else:
                results.append(moderation_result(specialist_flags(p, policy), p, name))
        return {"id": "modr-" + completion_id()[9:], "model": name, "results": results}
