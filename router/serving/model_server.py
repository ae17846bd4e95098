"""A Ray Serve deployment around one model backend: a thin shell, one per catalogue model."""
from __future__ import annotations

import asyncio
import dataclasses

from ray import serve

from router.serving.coalescing import coalesced
from router.serving.queueing import queue_deadline, slot

from models.backend import GenerationRequest
from models.registry import make_backend
from models.catalogue import load_catalogue
from models.runtime_options import backend_options


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=8, max_queued_requests=32,
                  health_check_period_s=10)
class ModelServer:
    def __init__(self, model_name: str, runtime: dict | None = None):
        self.name = model_name
        runtime = runtime or {}
        self.stream_interval_s = runtime.get("stream_interval_ms", 0) / 1000
        self.backend = make_backend(load_catalogue().model(model_name), **backend_options(runtime))
        # one request per llama.cpp slot generates; the rest wait here, where their wait can be bounded
        self.slots = asyncio.Semaphore(int(runtime.get("n_parallel", 2)))

    def ready(self) -> str:
        return self.name

    async def generate(self, request: dict) -> dict:
        request, deadline = queue_deadline(request)
        async with slot(self.slots, deadline, self.name):
            return dataclasses.asdict(await self.backend.generate(GenerationRequest(**request)))

    async def stream(self, request: dict):
        request, deadline = queue_deadline(request)
        async with slot(self.slots, deadline, self.name):
            deltas = (dataclasses.asdict(d) async for d in self.backend.stream(GenerationRequest(**request)))
            async for delta in coalesced(deltas, self.stream_interval_s):
                yield delta
