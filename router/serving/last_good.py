"""The last policy that was live, kept where it outlives the ingress replica: Ray's GCS key-value store.

Serve restarts a dead replica with the user_config it holds, which may be an edit the ingress refused. The
new replica then starts on this copy instead of refusing to start, so one bad edit cannot become an outage
at the next restart. The copy lives as long as the Ray cluster; a fresh cluster has none, and a bad first
policy still refuses to start.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

from ray.experimental import internal_kv

logger = logging.getLogger("ray.serve")
NAMESPACE = "ensemble-router"


class LastGoodPolicy:
    def __init__(self, app_name: str):
        self.key = f"last-good-policy/{app_name}"

    def save(self, policy_data: Any) -> None:
        try:
            internal_kv._internal_kv_put(self.key, json.dumps({"policy": policy_data, "saved_at": time.time()}),
                                         overwrite=True, namespace=NAMESPACE)
        except Exception as exc:  # keep serving; only the restart protection is lost
            logger.error("could not keep the last good policy in Ray's key-value store: %s", exc)

    def load(self) -> Any | None:
        """The last policy saved for this app, or None."""
        try:
            raw = internal_kv._internal_kv_get(self.key, namespace=NAMESPACE)
        except Exception as exc:
            logger.error("could not read the last good policy from Ray's key-value store: %s", exc)
            return None
        return json.loads(raw)["policy"] if raw else None
