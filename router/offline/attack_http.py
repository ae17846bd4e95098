"""The black-box view of the gadget search: only what any client of POST /v1/route sees. Which model would
answer (the large one is the model /v1/models marks as the fallback), the scores and thresholds when the policy
discloses them, and a 400 when the guard refuses the prompt."""
from __future__ import annotations

import asyncio
from typing import Sequence

import httpx
import numpy as np

from router.offline.attack import Observation, margin_of


class HttpView:
    def __init__(self, base_url: str, api_key: str | None = None, concurrency: int = 8, timeout_s: float = 60):
        self.base = base_url.rstrip("/")
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.concurrency, self.timeout_s = concurrency, timeout_s
        self.requests = 0
        try:
            models = httpx.get(f"{self.base}/v1/models", headers=self.headers, timeout=timeout_s).json()["data"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise ValueError(f"cannot read {self.base}/v1/models: {exc}") from None
        fallbacks = [m["id"] for m in models if m.get("fallback")]
        if not fallbacks:
            raise ValueError(f"{self.base}/v1/models names no fallback model")
        self.large = fallbacks[0]

    def observe(self, texts: Sequence[str]) -> Observation:
        replies = asyncio.run(self._route_all(list(texts)))
        n = len(texts)
        to_large, to_small, flagged = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
        margins: list[float] | None = []
        for i, (status, body) in enumerate(replies):
            if status != 200:
                flagged[i] = (body.get("error") or {}).get("code") == "suspected_gadget"
                margins = None if margins is None else margins + [-1.0]
                continue
            to_large[i], to_small[i] = body["model"] == self.large, body["model"] != self.large
            if margins is not None and "confidence" in body and "thresholds" in body:
                margins.append(margin_of(body["confidence"], body["thresholds"], body.get("eligible", [])))
            else:
                margins = None  # scores withheld: the search sees decisions only
        return Observation(to_large, to_small, flagged, None if margins is None else np.asarray(margins))

    async def _route_all(self, texts: list[str]) -> list[tuple[int, dict]]:
        limit = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=self.headers) as http:
            async def one(text: str) -> tuple[int, dict]:
                async with limit:
                    reply = await http.post(f"{self.base}/v1/route",
                                            json={"model": "auto", "messages": [{"role": "user", "content": text}]})
                    self.requests += 1
                    try:
                        return reply.status_code, reply.json()
                    except ValueError:
                        return reply.status_code, {}
            return await asyncio.gather(*(one(t) for t in texts))
