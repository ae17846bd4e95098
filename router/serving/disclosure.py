"""What a client sees of a routing decision. With the policy's `access.disclose_routing: false`, only a client
that sends the operator key (header x-router-operator-key) sees scores, thresholds and reasons; every other
client sees which model answered and the policy version. A learned router's scores make a black-box search for
a steering prefix easy ("Rerouting LLM Routers", Shafran et al., 2025), so an operator can withhold them."""
from __future__ import annotations

import hmac
import json
import logging
import os
from pathlib import Path

logger = logging.getLogger("ray.serve")
OPERATOR_HEADER = "x-router-operator-key"
OPERATOR_KEY_ENV = "ROUTER_OPERATOR_KEY"
WITHHELD_FIELDS = ("rule", "reason", "task", "scores", "thresholds", "confidence", "eligible", "ood_distance", "ood_threshold",
                   "cascade", "input_tokens")
WITHHELD_HEADERS = ("x-router-rule", "x-router-reason", "x-router-task", "x-router-scores", "x-router-ood",
                    "x-router-cascade")


def operator_key(access) -> str | None:
    path = access.operator_key_file
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError:
            logger.error("cannot read operator_key_file %s; no client sees routing details until it is readable", path)
            return None
    return os.environ.get(OPERATOR_KEY_ENV) or None


def may_see_routing(access, given: str | None) -> bool:
    """True when the policy discloses routing to everyone, or the client sent the operator key."""
    if access.disclose_routing:
        return True
    key = operator_key(access)
    return key is not None and given is not None and hmac.compare_digest(given.encode(), key.encode())


def shown_headers(headers: dict[str, str], disclose: bool) -> dict[str, str]:
    return headers if disclose else {k: v for k, v in headers.items() if k not in WITHHELD_HEADERS}


def shown_body(info: dict, disclose: bool) -> dict:
    return info if disclose else {k: v for k, v in info.items() if k not in WITHHELD_FIELDS}


def header_text(text: str) -> str:
    """Printable ASCII on one line: a newline in a header value (an exception's message has them) makes the
    HTTP server drop the connection without a response."""
    return " ".join(text.encode("ascii", "replace").decode().split())


def routing_headers(decision, version: str, fallback_reason: str | None = None) -> dict[str, str]:
    """A decision's x-router-* headers, all of them: `shown_headers` then drops what this client may not see."""
    headers = {"x-router-model": decision.model or "", "x-router-rule": decision.rule,
               "x-router-reason": header_text(decision.reason),
               "x-router-task": decision.task, "x-router-policy-version": version,
               "x-router-scores": json.dumps({k: round(v, 3) for k, v in decision.scores.items()}, separators=(",", ":"))}
    if decision.profile is not None:
        headers["x-router-profile"] = decision.profile
    if decision.ood_distance is not None:
        headers["x-router-ood"] = f"distance={decision.ood_distance:.4f};threshold={decision.ood_threshold:.4f}"
    if fallback_reason:
        headers["x-router-fallback"] = header_text(fallback_reason)[:300]
    return headers
