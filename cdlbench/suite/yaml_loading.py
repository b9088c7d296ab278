"""Suite files as YAML: strict loading (no duplicate keys, plain scalar keys, safe tags only)
and the tree check (finite, bounded depth). Every problem is a `SuiteError`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class SuiteError(ValueError):
    def __init__(self, file: str, field: str, message: str):
        self.file, self.field, self.message = str(file), field, message
        super().__init__(f"{file}: field '{field}': {message}" if field else f"{file}: {message}")


# ---------------------------------------------------------------- strict YAML
class _StrictLoader(yaml.SafeLoader):
    """Safe loader that rejects duplicate keys."""


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"a mapping key must be a plain scalar, got {type(key).__name__} "
                f"(line {key_node.start_mark.line + 1})", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {key_node.start_mark.line + 1})", key_node.start_mark)
        seen[key] = True
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SuiteError(path, "", f"cannot read the suite file ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise SuiteError(path, "", f"not a text (UTF-8) file: byte {exc.start} cannot be decoded") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)   # a SafeLoader: no tags that build Python objects
    except yaml.YAMLError as exc:
        raise SuiteError(path, "", f"not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise SuiteError(path, "", "not a usable suite: nested more than Python's recursion limit") from None
    check_tree(data, path)
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what is wrong and where (line, column)."""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["unreadable"])[0]
    context = getattr(exc, "context", None)
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{context + ': ' if context else ''}{problem}{where}".split())


MAX_DEPTH = 32


def check_tree(data, file, field: str = "", depth: int = 0, seen: tuple = ()) -> None:
    """A suite is a finite tree of plain values: no alias cycles, bounded depth, string keys."""
    if depth > MAX_DEPTH:
        raise SuiteError(file, field, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(data, (dict, list)):
        if any(data is s for s in seen):
            raise SuiteError(file, field, "refers to itself (a YAML alias cycle)")
        seen = seen + (data,)
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{field}.{key}" if field else str(key)
            if not isinstance(key, str):
                raise SuiteError(file, path, f"keys must be strings, got {type(key).__name__} {key!r}")
            check_tree(value, file, path, depth + 1, seen)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            check_tree(value, file, f"{field}[{i}]", depth + 1, seen)
