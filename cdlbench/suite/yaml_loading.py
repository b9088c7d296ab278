"""Suite files (and the report's baselines and claims files) as YAML: bounded input (a regular file of at most MAX_SUITE_BYTES, at most
MAX_NODES nodes after alias expansion), strict loading (no duplicate keys, plain scalar keys,
safe tags only) and the tree check (finite, bounded depth). Every problem is a `SuiteError`."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError


class SuiteError(UserError, ValueError):
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


MAX_SUITE_BYTES = 4 * 1024 * 1024
MAX_NODES = 100_000          # YAML nodes after alias expansion (a suite has a few hundred)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n} bytes"


def check_regular_file(path: str | Path, what: str, max_bytes: int) -> os.stat_result:
    """SuiteError unless path is a regular file (symlinks followed) of at most max_bytes;
    `what` names it in the message ("dataset file", ...). Returns its stat."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SuiteError(path, "", f"cannot read the {what} ({exc.strerror or exc})") from None
    _check_stat(path, st, what, max_bytes)
    return st


def _check_stat(path: Path, st: os.stat_result, what: str, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise SuiteError(path, "", f"the {what} must be a regular file (at most {_size(max_bytes)}); "
                                   f"this is {_kind(st.st_mode)}")
    if st.st_size > max_bytes:
        raise SuiteError(path, "", f"the {what} is {_size(st.st_size)}; at most {_size(max_bytes)} is allowed")


def read_regular_file(path: str | Path, what: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most max_bytes (SuiteError otherwise). Opened without
    blocking and checked on the open descriptor, so a FIFO or device never hangs or streams."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise SuiteError(path, "", f"cannot read the {what} ({exc.strerror or exc})") from None
    try:
        _check_stat(path, os.fstat(fd), what, max_bytes)
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise SuiteError(path, "", f"cannot read the {what} ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if total > max_bytes:            # it grew while being read
        raise SuiteError(path, "", f"the {what} is larger than the {_size(max_bytes)} allowed")
    return b"".join(chunks)


def count_nodes(node, limit: int = MAX_NODES) -> int:
    """Nodes of a composed YAML graph with aliases expanded (a node reached twice counts twice),
    memoised per node so an alias bomb is counted in time linear in its text; stops above limit.
    An alias back to an enclosing node (a cycle) counts once; the tree check reports it."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def count(n) -> int:
        key = id(n)
        if key in memo:
            return memo[key]
        if key in active:
            return 1
        active.add(key)
        total = 1
        if isinstance(n, yaml.SequenceNode):
            for child in n.value:
                total += count(child)
                if total > limit:
                    break
        elif isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                total += count(k) + count(v)
                if total > limit:
                    break
        active.discard(key)
        memo[key] = total
        return total

    return count(node)


def load_yaml(path: str | Path) -> Any:
    return load_bounded_yaml(path, "suite file", "a suite has a few hundred")


def load_bounded_yaml(path: str | Path, what: str, typical: str, max_bytes: int = MAX_SUITE_BYTES,
                      max_nodes: int = MAX_NODES) -> Any:
    """A YAML file read as suites are (a regular file of at most max_bytes, at most max_nodes
    nodes once aliases are expanded, strict keys, safe tags, a finite tree of bounded depth);
    `what` names the file in messages ("baselines file"), `typical` says what size is usual.
    Every problem is a SuiteError naming the file."""
    path = Path(path)
    raw = read_regular_file(path, what, max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SuiteError(path, "", f"not a text (UTF-8) file: byte {exc.start} cannot be decoded") from None
    loader = None
    try:
        loader = _StrictLoader(text)     # a SafeLoader: no tags that build Python objects (its reader checks characters)
        node = loader.get_single_node()          # the node graph: aliases are shared, not yet expanded
        if node is not None:
            n = count_nodes(node, max_nodes)
            if n > max_nodes:
                raise SuiteError(path, "", f"too large: more than {max_nodes} YAML nodes once aliases are "
                                           f"expanded ({typical}); is it an alias bomb?")
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise SuiteError(path, "", f"not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise SuiteError(path, "", f"not a usable {what.removesuffix(' file')}: nested more than Python's "
                                   f"recursion limit") from None
    finally:
        if loader is not None:
            loader.dispose()
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
