"""`router calibrate`: set each small model's threshold from a target, and write them into the policy YAML.

Targets: keep at least a share of always-large quality (`--keep-quality 0.95`), or send at most a share of
calls to the large model (`--max-large-share 0.3`). Thresholds are chosen on out-of-fold predictions (K-fold
over the outcome table, grouped by prompt, with the artifact's family and settings), so they are not fitted to
the classifier's own training rows. Each row's model is chosen by the serving decision under the policy. Among the thresholds
that meet the target, the cheapest wins; ties go to the higher quality.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from router.offline.report import choose

def threshold_grid(step: float = 0.05) -> np.ndarray:
    """The values tried for each threshold: step, 2 step, ... below 1."""
    return np.round(np.arange(step, 1.0 - 1e-9, step), 6)


GRID = threshold_grid(0.05)


@dataclass
class Calibration:
    thresholds: dict[str, float]
    quality: float
    cost: float
    large_share: float
    large_quality: float
    large_cost: float
    met_target: bool


def search(probs: np.ndarray, scores: np.ndarray, costs: np.ndarray, models: list[str], eligible: np.ndarray | None,
           keep_quality: float | None = None, max_large_share: float | None = None,
           chooser: Callable[[dict[str, float]], np.ndarray] | None = None, grid: np.ndarray = GRID) -> Calibration:
    """`chooser(thresholds)` gives each row's chosen column; by default the policy-less vectorised rule, and in
    `router calibrate` the serving decision itself under the policy with those thresholds. `grid`: the values
    tried for each threshold."""
    if (keep_quality is None) == (max_large_share is None):
        raise ValueError("give exactly one target: keep_quality or max_large_share")
    rows = np.arange(len(scores))
    large_q, large_c = float(scores[:, -1].mean()), float(costs[:, -1].sum())
    small = len(models) - 1
    grids = itertools.product(grid, repeat=small) if small <= 3 else ((t,) * small for t in grid)
    best, best_key = None, None
    for combo in grids:
        thresholds = {m: float(t) for m, t in zip(models[:-1], combo)}
        chosen = chooser(thresholds) if chooser is not None else choose(probs, np.array(combo), eligible)
        quality, cost = float(scores[rows, chosen].mean()), float(costs[rows, chosen].sum())
        share = float((chosen == small).mean())
        ok = quality >= keep_quality * large_q if keep_quality is not None else share <= max_large_share
        found = Calibration(thresholds, quality, cost, share, large_q, large_c, ok)
        key = ranking(found, keep_quality is not None)
        if best_key is None or key > best_key:
            best_key, best = key, found
    return best


def ranking(result: Calibration, quality_target: bool) -> tuple:
    """How calibrations compare (larger is better): the target met first; then the cheapest (quality target) or
    the best quality (share target); then the other."""
    if quality_target:
        return result.met_target, -result.cost, result.quality
    return result.met_target, result.quality, -result.cost


def _policy_node(root: yaml.Node) -> yaml.MappingNode:
    """The policy mapping: the document itself, or the ingress user_config.policy inside a Serve config."""
    def get(node, key):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == key:
                    return v
        return None

    if get(root, "applications") is None:
        return root
    for app in get(root, "applications").value:
        for dep in (get(app, "deployments").value if get(app, "deployments") else []):
            policy = get(get(dep, "user_config"), "policy") if get(dep, "user_config") else None
            if policy is not None:
                return policy
    raise ValueError("no deployment has user_config.policy")


def write_thresholds(path: Path, thresholds: dict[str, float], version: str | None = None) -> None:
    """Edit the threshold values in place, keeping the file's comments and layout."""
    text = path.read_text()
    policy = _policy_node(yaml.compose(text, Loader=yaml.SafeLoader))
    edits = []  # (start, end, replacement)
    entries = {k.value: v for k, v in policy.value}
    if version is not None and "version" in entries:
        node = entries["version"]
        edits.append((node.start_mark.index, node.end_mark.index, f'"{version}"'))
    models = {k.value: v for k, v in entries["models"].value}
    for name, value in thresholds.items():
        if name not in models:
            raise ValueError(f"{path}: the policy has no model {name!r}")
        fields = {k.value: (k, v) for k, v in models[name].value}
        if "threshold" in fields:
            node = fields["threshold"][1]
            edits.append((node.start_mark.index, node.end_mark.index, f"{value:g}"))
        elif models[name].flow_style or not fields:
            raise ValueError(f"{path}: add a 'threshold:' line to model {name!r} (block style) so it can be set")
        else:
            first_key = next(iter(fields.values()))[0]
            line_start = text.rfind("\n", 0, first_key.start_mark.index) + 1
            indent = " " * first_key.start_mark.column
            edits.append((line_start, line_start, f"{indent}threshold: {value:g}\n"))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    path.write_text(text)


def write_setting(path: Path, key: str, value: str) -> None:
    """Set one top-level scalar of the policy, in place, keeping the file's comments and layout: its value is
    replaced, or a line is added above `models:`."""
    text = path.read_text()
    policy = _policy_node(yaml.compose(text, Loader=yaml.SafeLoader))
    if policy.flow_style:
        raise ValueError(f"{path}: write the policy in block style, one key per line, so {key} can be set")
    entries = {k.value: (k, v) for k, v in policy.value}
    if key in entries:
        node = entries[key][1]
        start, end, replacement = node.start_mark.index, node.end_mark.index, value
    else:
        models = entries["models"][0]
        start = end = text.rfind("\n", 0, models.start_mark.index) + 1
        replacement = f"{' ' * models.start_mark.column}{key}: {value}\n"
    path.write_text(text[:start] + replacement + text[end:])


def write_profile(path: Path, name: str, thresholds: dict[str, float]) -> None:
    """Set the policy's profile `name` to these thresholds, in place, keeping the file's comments and layout: the
    profile's line is replaced, or added to `profiles:`, or `profiles:` is added above `models:`."""
    text = path.read_text()
    policy = _policy_node(yaml.compose(text, Loader=yaml.SafeLoader))
    entries = {k.value: (k, v) for k, v in policy.value}
    value = yaml.safe_dump({m: round(float(t), 4) for m, t in thresholds.items()}, default_flow_style=True,
                           sort_keys=False).strip()
    if "profiles" not in entries:
        key = entries["models"][0]
        indent = " " * key.start_mark.column
        start = text.rfind("\n", 0, key.start_mark.index) + 1
        edit = (start, start, f"{indent}profiles:\n{indent}  {name}: {value}\n")
    else:
        profiles = entries["profiles"][1]
        found = {k.value: v for k, v in profiles.value} if isinstance(profiles, yaml.MappingNode) else None
        if found is None or (profiles.flow_style and profiles.value):
            raise ValueError(f"{path}: write 'profiles:' in block style, one profile per line, so one can be set")
        if name in found:
            edit = (found[name].start_mark.index, found[name].end_mark.index, value)
        elif not profiles.value:  # `profiles: {}`
            key = entries["profiles"][0]
            indent = " " * (key.start_mark.column + 2)
            edit = (key.end_mark.index, profiles.end_mark.index, f":\n{indent}{name}: {value}")
        else:
            first = profiles.value[0][0]
            start = text.rfind("\n", 0, first.start_mark.index) + 1
            edit = (start, start, f"{' ' * first.start_mark.column}{name}: {value}\n")
    start, end, replacement = edit
    path.write_text(text[:start] + replacement + text[end:])
