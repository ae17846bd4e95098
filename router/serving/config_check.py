"""`router policy check-config`: refuse a bad Ray Serve config before `serve deploy` sends it.

Checks what Serve itself would (its own ServeDeploySchema), then what the ingress would refuse at start: the
policy in RouterIngress's user_config and the classifier and guard files it names, the builder's args, and
deployment names the app does not have. Every
problem is reported at once, with its line. Each app is checked against the catalogue its replicas will read:
the file named by its runtime_env's ROUTER_CATALOGUE, else this shell's.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema

from models.catalogue import CATALOGUE_ENV, Catalogue, load_catalogue
from models.runtime_options import RuntimeOptions
from router.serving.live import INGRESS, bad_switches, model_calls_of
from router.artifacts import load_artifacts
from router.policy import Policy, parse_policy
from models.yaml_source import ConfigError, describe_errors, locate, read_yaml_file

BUILDER = "router.serving.app:build_app"


def check_serve_config(path: str | Path, catalogue: Catalogue | None = None) -> str:
    """A one-line summary of a deployable config; ConfigError naming every problem otherwise."""
    source = str(path)
    data, root = read_yaml_file(path)
    problems: list[str] = []
    try:
        ServeDeploySchema.model_validate(data)
    except ValidationError as err:
        problems += describe_errors(err, source, root)
    apps = data.get("applications") if isinstance(data, dict) else None
    routers = [(a, app) for a, app in enumerate(apps if isinstance(apps, list) else [])
               if isinstance(app, dict) and app.get("import_path") == BUILDER]
    if not routers:
        problems.append(f"{source}: applications: no application imports {BUILDER}")
    summaries, notes = [], []
    for a, app in routers:
        app_catalogue, catalogue_problems = _catalogue_of(app, ("applications", a), catalogue, source, root)
        problems += catalogue_problems
        if app_catalogue is None:
            continue
        app_problems, summary = _check_router_app(app, ("applications", a), app_catalogue, source, root)
        problems += app_problems
        summaries.append(summary)
        served = app["args"].get("models") if isinstance(app.get("args"), dict) else None
        notes += _key_notes(app, served if isinstance(served, list) and served else app_catalogue.names(),
                            app_catalogue)
    if problems:
        raise ConfigError(source, problems)
    return "\n".join([f"{source}: ready to deploy ({'; '.join(summaries)})", *notes])


def _env_vars(app: dict) -> dict:
    runtime_env = app.get("runtime_env") if isinstance(app.get("runtime_env"), dict) else {}
    return runtime_env.get("env_vars") if isinstance(runtime_env.get("env_vars"), dict) else {}


def _key_notes(app: dict, models: list, catalogue: Catalogue) -> list[str]:
    """Remote models whose key variable is set neither in this shell nor in the app's runtime_env. Not an error,
    since a cluster's nodes may set it, but their replicas fail at start wherever it is unset."""
    notes, env_vars = [], _env_vars(app)
    for name in models:
        endpoint = catalogue.model(name).endpoint if name in catalogue.names() else None
        key = endpoint.api_key_env if endpoint else None
        if key and key not in env_vars and not os.environ.get(key):
            notes.append(f"note: {name} reads its API key from {key}, which is set neither in this shell nor in "
                         f"the app's runtime_env.env_vars; its replicas fail at start on any node that does not set it")
    return notes


def _catalogue_of(app: dict, at: tuple, given: Catalogue | None, source: str,
                  root) -> tuple[Catalogue | None, list[str]]:
    """The catalogue the app's replicas load: runtime_env.env_vars.ROUTER_CATALOGUE if set, else this shell's."""
    named = _env_vars(app).get(CATALOGUE_ENV)
    if given is not None or not named:
        return given or load_catalogue(), []
    where = at + ("runtime_env", "env_vars", CATALOGUE_ENV)
    if not Path(named).is_file():
        return None, locate([(where, f"no catalogue file at {named!r} here; check-config reads the file the app's "
                                     "replicas will read, so give a path that exists on this machine too")],
                            source, root)
    try:
        return load_catalogue(named), []
    except ConfigError as exc:
        return None, locate([(where, f"the catalogue {named!r} is refused:")], source, root) + exc.problems


def _runtime_problems(args: dict, catalogue: Catalogue) -> list[tuple[tuple, str]]:
    """The llama.cpp options: `runtime`, and each `runtime_per_model` entry (a catalogue model's own options)."""
    per_model = args.get("runtime_per_model") or {}
    if not isinstance(per_model, dict):
        return [(("runtime_per_model",), "must map model names to llama.cpp options")]
    found = [(("runtime_per_model", name), f"unknown model {name!r}; the catalogue has {catalogue.names()}")
             for name in per_model if name not in catalogue.names()]
    for where, options in [(("runtime",), args.get("runtime") or {}),
                           *((("runtime_per_model", name), options or {}) for name, options in per_model.items())]:
        try:
            RuntimeOptions.model_validate(options)
        except ValidationError as err:
            found += [(where + tuple(e["loc"]), e["msg"]) for e in err.errors()]
    return found


def _check_router_app(app: dict, at: tuple, catalogue: Catalogue, source: str, root) -> tuple[list[str], str]:
    args = app.get("args") if isinstance(app.get("args"), dict) else {}
    found: list[tuple[tuple, str]] = []
    models = args.get("models") or catalogue.names()
    for i, name in enumerate(models if isinstance(models, list) else []):
        if name not in catalogue.names():
            found.append((at + ("args", "models", i), f"unknown model {name!r}; the catalogue has {catalogue.names()}"))
    found += [(at + ("args",) + where, message) for where, message in _runtime_problems(args, catalogue)]
    threads = args.get("encoder_threads", 2)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        found.append((at + ("args", "encoder_threads"), f"{threads!r} must be a whole number of at least 1"))
    try:
        model_calls_of(args)
    except ValueError as exc:
        found.append((at + ("args", "model_calls"), str(exc)))
    found += [(at + ("args", name), message) for name, message in bad_switches(args)]
    served = {INGRESS, *(m for m in models if isinstance(m, str))}  # the specialists run inside the ingress
    policy_data: Any = None
    policy_at: tuple = ()
    shadow_problems: list[str] = []
    for d, dep in enumerate(app.get("deployments") or []):
        name = dep.get("name") if isinstance(dep, dict) else None
        if name not in served:
            found.append((at + ("deployments", d, "name"), f"the app has no deployment {name!r}; it has {sorted(served)}"))
        elif name == INGRESS and isinstance(dep.get("user_config"), dict):
            user_config, user_at = dep["user_config"], at + ("deployments", d, "user_config")
            if "policy" in user_config:
                policy_data, policy_at = user_config["policy"], user_at + ("policy",)
            if user_config.get("shadow_policy") is not None:  # a shadow policy is checked like the live one
                try:
                    _policy_with_artifacts(user_config["shadow_policy"], source, catalogue, root,
                                           user_at + ("shadow_policy",))
                except ConfigError as exc:
                    shadow_problems = exc.problems
    problems = locate(found, source, root) + shadow_problems
    if policy_data is None:
        return problems, "policy from args.policy_file or the default"
    try:
        policy = _policy_with_artifacts(policy_data, source, catalogue, root, policy_at)
    except ConfigError as exc:
        return problems + exc.problems, "policy refused"
    unserved = [m for m in policy.models if m not in served]
    if unserved:
        problems += locate([(policy_at + ("models",), f"{unserved} are not served by this app (args.models)")],
                           source, root)
    profiles = f", profiles {', '.join(policy.profiles)}" if policy.profiles else ""
    return problems, f"policy {policy.version}, models {', '.join(policy.models)}{profiles}"



def _policy_with_artifacts(data: Any, source: str, catalogue: Catalogue, root, at: tuple) -> Policy:
    """The policy, checked as the ingress checks it: its fields, then the classifier and guard files it names."""
    policy = parse_policy(data, source, catalogue, root, at)
    load_artifacts(policy, source, catalogue)
    return policy
