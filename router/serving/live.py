"""Make a policy live on a running deployment: validate it here, then redeploy the Serve config with the
new policy as the ingress's user_config through Serve's REST API (what `serve deploy` does).
Ray Serve then calls RouterIngress.reconfigure in place: no restart, requests in flight complete."""
from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from router.artifacts import load_checked_policy

INGRESS = "RouterIngress"
MODEL_CALLS = ("grpc", "actor")  # the ingress arg model_calls: how it calls the model deployments


def model_calls_of(args: dict) -> str:
    """The app's `model_calls` arg ("grpc" when absent); a ValueError naming the choices for anything else."""
    value = args.get("model_calls", MODEL_CALLS[0])
    if value not in MODEL_CALLS:
        raise ValueError(f"{value!r} must be one of {list(MODEL_CALLS)}")
    return value


SWITCHES = {"store_text": False, "record_decisions": True, "store_responses": True}  # the app's on/off args


def bad_switches(args: dict) -> list[tuple[str, str]]:
    """(arg, message) for each on/off arg that is not true or false: YAML's "false" in quotes is a string, which
    Python would read as on."""
    return [(name, f"{args[name]!r} must be true or false") for name in SWITCHES
            if name in args and not isinstance(args[name], bool)]


def switches_of(args: dict) -> dict[str, bool]:
    """The app's on/off args, defaults filled in; a ValueError naming each bad one."""
    bad = bad_switches(args)
    if bad:
        raise ValueError("; ".join(f"args.{name}: {message}" for name, message in bad))
    return {name: args.get(name, default) for name, default in SWITCHES.items()}


KEEP = object()  # leave the config's shadow policy as it is


def config_with_policy(config: dict, policy: dict, shadow: dict | None | object = KEEP) -> dict:
    """The Serve config with `policy` as the ingress's live policy and `shadow` (None: no shadow) as its shadow."""
    for app in config.get("applications") or []:
        for dep in app.get("deployments") or []:
            if dep.get("name") == INGRESS:
                user_config = dep.setdefault("user_config", {})
                user_config["policy"] = policy
                if shadow is None:
                    user_config.pop("shadow_policy", None)
                elif shadow is not KEEP:
                    user_config["shadow_policy"] = shadow
                return config
    raise ValueError(f"the Serve config has no deployment named {INGRESS}")


class ServeRefused(RuntimeError):
    """The Serve REST API answered the config with an error; `status` is its HTTP status."""

    def __init__(self, status: int, text: str):
        # a traceback's last lines name its cause
        shown = text if len(text) <= 1000 else text[:300] + " ... " + text[-700:]
        super().__init__(f"Serve refused the config ({status}): {shown}")
        self.status = status


def deploy_config(config: dict, address: str) -> None:
    try:
        reply = httpx.put(f"{address.rstrip('/')}/api/serve/applications/", json=config, timeout=120)
    except httpx.HTTPError as exc:
        raise RuntimeError(f"cannot reach the Serve REST API at {address}: {exc}") from None
    if reply.status_code >= 400:
        raise ServeRefused(reply.status_code, reply.text)


def apply_policy_file(policy_file: Path, serve_config: Path, address: str) -> str:
    policy = load_checked_policy(policy_file)  # refuses a bad policy before it reaches the server
    config = yaml.safe_load(serve_config.read_text())
    deploy_config(config_with_policy(config, policy.model_dump(mode="json")), address)
    return f"policy {policy.version} from {policy_file} sent to {address}; check GET /v1/policy"


def policy_status(url: str) -> tuple[str, bool]:
    """What a running endpoint serves: (a readable report, whether a refused edit is pending)."""
    try:
        reply = httpx.get(f"{url.rstrip('/')}/v1/policy", timeout=30)
        reply.raise_for_status()
        body = reply.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise RuntimeError(f"cannot read the policy from {url}/v1/policy: {exc}") from None
    lines = [f"live policy: {body['version']} (replica pid {body.get('replica_pid')})"]
    refused = body.get("refused_edit")
    if refused:
        lines.append(f"REFUSED edit: {refused.get('version') or '(no version)'}; the live policy keeps serving "
                     f"until a valid edit is deployed. Problems:")
        lines.append(refused["message"])
    else:
        lines.append("no refused edit: the live policy is the one deployed")
    return "\n".join(lines), bool(refused)
