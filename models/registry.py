"""The runtime registry: which backend class serves a catalogue entry's `runtime`. Apart from the interface
(models/backend.py), so that the interface and the backends do not import each other."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from models.backend import BackendError, ChatBackend
from models.catalogue import ModelEntry


def _llamacpp() -> type[ChatBackend]:
    from models.llamacpp import LlamaCppBackend  # imported on use: the runtime loads a native library

    return LlamaCppBackend


def _openai() -> type[ChatBackend]:
    from models.remote_openai import RemoteOpenAIBackend

    return RemoteOpenAIBackend


RUNTIMES: dict[str, Callable[[], type[ChatBackend]]] = {"llamacpp": _llamacpp, "openai": _openai}


def make_backend(entry: ModelEntry, weights_dir: Path | None = None, **runtime_options) -> ChatBackend:
    if entry.runtime not in RUNTIMES:
        raise BackendError(f"no backend for runtime {entry.runtime!r} (model {entry.name}); known: {sorted(RUNTIMES)}")
    return RUNTIMES[entry.runtime]()(entry, weights_dir, **runtime_options)
