"""Load YAML into a pydantic model and report every bad field with its line.

Pydantic gives the path of each bad field; PyYAML's node tree gives the line of that path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(ValueError):
    """A config file that cannot be used; `problems` lists each one as 'source:line: field: why'."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  {p}" for p in problems))


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest node that `loc` reaches in the YAML tree."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for key in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(key):
                    child = v
                    line = k.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = node.value[key]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def locate(problems: list[tuple[tuple, str]], source: str, root: yaml.Node | None, prefix: tuple = ()) -> list[str]:
    """Format (path, message) pairs as 'source:line: field: message'."""
    out = []
    for loc, msg in problems:
        line = _line_of(root, prefix + tuple(loc))
        field = ".".join(str(p) for p in loc) or "(top level)"
        out.append(f"{source}:{line}: {field}: {msg}" if line else f"{source}: {field}: {msg}")
    return out


def describe_errors(err: ValidationError, source: str, root: yaml.Node | None, prefix: tuple = ()) -> list[str]:
    return locate([(tuple(e["loc"]), e["msg"]) for e in err.errors()], source, root, prefix)


def duplicate_keys(root: yaml.Node | None, source: str) -> list[str]:
    """Keys given twice in one mapping: YAML forbids them, and PyYAML would silently keep the later one."""
    problems, stack, seen_nodes = [], [root], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen_nodes:  # an alias repeats a node; visit it once
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    if key.value in keys:
                        problems.append((key.start_mark.line + 1, f"{source}:{key.start_mark.line + 1}: duplicate "
                                         f"key {key.value!r}; each key may appear once in a mapping"))
                    keys.add(key.value)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return [message for _, message in sorted(problems)]


def parse_yaml_text(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    try:
        data, root = yaml.safe_load(text), yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(source, [f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    duplicates = duplicate_keys(root, source)
    if duplicates:
        raise ConfigError(source, duplicates)
    return data, root


def validate_data(model: type[ModelT], data: Any, source: str, root: yaml.Node | None = None,
                  prefix: tuple = (), context: dict | None = None) -> ModelT:
    try:
        return model.model_validate(data, context=context)
    except ValidationError as err:
        raise ConfigError(source, describe_errors(err, source, root, prefix)) from None


def read_yaml_file(path: str | Path) -> tuple[Any, yaml.Node | None]:
    """(data, node tree) of a YAML file; ConfigError when it cannot be read or parsed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"{path}: cannot read: {exc}"]) from None
    return parse_yaml_text(text, str(path))


def load_yaml_model(model: type[ModelT], path: str | Path) -> ModelT:
    data, root = read_yaml_file(path)
    return validate_data(model, data, str(path), root)
