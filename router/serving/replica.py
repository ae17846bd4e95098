"""The ingress replica of this process, for code that FastAPI calls outside a route method (the validation
error handler). A module of its own: Serve may pickle router.serving.app's functions by value, with a copy of its
globals, but a module they import is looked up by name in the replica."""
from __future__ import annotations

from typing import Any

_active: list[Any] = []


def register(ingress: Any) -> None:
    _active[:] = [ingress]


def active() -> Any | None:
    return _active[0] if _active else None
