"""llama.cpp settings of the model replicas, from the Serve config's args: `runtime` for every model, and
`runtime_per_model` to change them for one model (the tiny model runs on 1 thread here: make bench)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RuntimeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n_parallel: int = Field(2, ge=1, le=64, description="slots per replica: concurrent requests batched together")
    slot_context: int = Field(4096, ge=256, description="context tokens per slot")
    threads: int = Field(2, ge=1, le=256, description="llama.cpp threads per replica: its num_cpus on a cluster")
    mmap: bool = Field(False, description="map the weight file instead of reading it (costs memory when "
                                          "llama.cpp repacks the weights, as for Q4_K on x86)")
    warmup: bool = Field(False, description="run llama.cpp's empty warm-up decode at load: with the weights read "
                         "into memory it costs load CPU and leaves the first answer as slow (bench/llama_warmup.md)")
    stream_interval_ms: int = Field(0, ge=0, le=1000, description="a stream's tokens that come within this many "
                                    "ms of the last piece sent go out as one piece (0: each token at once)")


def backend_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options the backend itself takes: all but the replica's own (`stream_interval_ms`, applied by the
    replica to what the backend streams)."""
    return {k: v for k, v in options.items() if k != "stream_interval_ms"}


def runtime_for(args: dict[str, Any], model: str) -> dict[str, Any]:
    """The options one model's replica runs with: args.runtime, then args.runtime_per_model[model] over it."""
    per_model = (args.get("runtime_per_model") or {}).get(model) or {}
    return RuntimeOptions.model_validate({**(args.get("runtime") or {}), **per_model}).model_dump()
