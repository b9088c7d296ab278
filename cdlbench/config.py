"""Suite files: strict YAML loading, validation against the registries, matrix expansion.

Every problem is a `SuiteError` naming the file, the field path and what is allowed; the CLI
turns it into one message and exit code 2.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .registry import DATASETS, LOSSES, METRICS, MODELS, SAMPLERS, Registry, UnknownComponentError


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
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {key_node.start_mark.line + 1})", key_node.start_mark)
        seen[key] = True
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SuiteError(path, "", f"cannot read the suite file ({exc.strerror or exc})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise SuiteError(path, "", f"not valid YAML: {str(exc).splitlines()[0] if str(exc) else exc}"
                         + (f" ({exc})" if "duplicate key" in str(exc) else "")) from None


# ---------------------------------------------------------------- schema
TRAIN_DEFAULTS = {"steps": 20000, "batch_size": 128, "lr": 1e-3, "ema": None, "log_every": 100}
TOP_KEYS = ("name", "version", "description", "expected_runtime", "seeds", "device",
            "dataset", "model", "train", "losses", "samplers", "metrics")
AXES = {"dataset": DATASETS, "model": MODELS, "losses": LOSSES, "samplers": SAMPLERS, "metrics": METRICS}
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Component:
    """A registered component with resolved parameters (defaults filled in)."""

    kind: str
    name: str
    params: dict            # resolved, JSON-serialisable
    explicit: tuple         # keys the suite gave
    label: str

    def key(self) -> str:
        return json.dumps({"name": self.name, **self.params}, sort_keys=True, default=str)


@dataclass(frozen=True)
class Cell:
    dataset: Component
    model: Component
    train: dict
    loss: Component
    sampler: Component
    seed: int

    @property
    def name(self) -> str:
        return f"{self.dataset.label}/{self.model.label}/{self.loss.label}/{self.sampler.label}/seed={self.seed}"

    def training_key(self) -> str:
        """Hash of everything that changes the trained weights."""
        blob = json.dumps([self.dataset.key(), self.model.key(), json.dumps(self.train, sort_keys=True),
                           self.loss.key(), self.seed], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Suite:
    path: str
    name: str
    version: int
    seeds: list
    device: str
    datasets: list
    models: list
    trains: list
    losses: list
    samplers: list
    metrics: list
    raw: dict

    def cells(self) -> list[Cell]:
        return [Cell(d, m, t, lo, s, seed) for d, m, t, lo, s, seed in itertools.product(
            self.datasets, self.models, self.trains, self.losses, self.samplers, self.seeds)]

    def resolved(self) -> dict:
        comp = lambda c: {"name": c.name, **c.params}  # noqa: E731
        return {"name": self.name, "version": self.version, "seeds": list(self.seeds), "device": self.device,
                "dataset": [comp(c) for c in self.datasets], "model": [comp(c) for c in self.models],
                "train": list(self.trains), "losses": [comp(c) for c in self.losses],
                "samplers": [comp(c) for c in self.samplers], "metrics": [comp(c) for c in self.metrics],
                **{k: self.raw[k] for k in ("description", "expected_runtime") if k in self.raw}}


# ---------------------------------------------------------------- type checks
def _type_ok(value, annotation) -> bool:
    if annotation is typing.Any or annotation is inspect_empty():
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation in (tuple, list) or origin in (tuple, list):
        return isinstance(value, (list, tuple))
    if annotation is dict or origin is dict:
        return isinstance(value, dict)
    return True


def inspect_empty():
    import inspect
    return inspect.Parameter.empty


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    return {float: "a number", int: "an integer", bool: "true/false", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))




def _as_list(value, file, field) -> list:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        if not value:
            raise SuiteError(file, field, "an empty list; give at least one entry (a mapping with 'name')")
        return value
    raise SuiteError(file, field, f"must be a mapping with 'name' or a list of them, got {type(value).__name__}")


def parse_component(spec, registry: Registry, file, field) -> Component:
    if not isinstance(spec, dict):
        raise SuiteError(file, field, f"must be a mapping with 'name', got {type(spec).__name__}")
    if "name" not in spec:
        raise SuiteError(file, f"{field}.name", f"missing; available {registry.kind}s: {', '.join(registry.names())}")
    name = spec["name"]
    if not isinstance(name, str):
        raise SuiteError(file, f"{field}.name", f"must be a string; available: {', '.join(registry.names())}")
    try:
        entry = registry.entry(name)
    except UnknownComponentError as exc:
        raise SuiteError(file, f"{field}.name", str(exc)) from None
    params = {p.name: p for p in entry.parameters()}
    given = {k: v for k, v in spec.items() if k != "name"}
    for key, value in given.items():
        if key not in params:
            raise SuiteError(file, f"{field}.{key}", f"unknown parameter of {registry.kind} '{name}'; "
                             f"valid keys: name, {', '.join(params) or '(none)'}")
        p = params[key]
        if not _type_ok(value, p.annotation):
            raise SuiteError(file, f"{field}.{key}", f"must be {_type_name(p.annotation)}, got {value!r}")
        check = entry.constraints.get(key)
        problem = check(value) if check else None
        if problem:
            raise SuiteError(file, f"{field}.{key}", f"{problem} (got {value!r})")
    for p in params.values():
        if p.required and p.name not in given:
            raise SuiteError(file, f"{field}.{p.name}", f"required by {registry.kind} '{name}'")
    resolved = {k: copy.deepcopy(given.get(k, p.default)) for k, p in params.items()}
    resolved = {k: (list(v) if isinstance(v, tuple) else v) for k, v in resolved.items()}
    shown = [k for k in given if given[k] != params[k].default] or list(given)[:1]
    label = name + (f"[{','.join(f'{k}={given[k]}' for k in shown)}]" if shown else "")
    return Component(registry.kind, name, resolved, tuple(given), label)


def _disambiguate(components: list[Component]) -> list[Component]:
    labels = [c.label for c in components]
    out = []
    for c in components:
        if labels.count(c.label) > 1:
            full = ",".join(f"{k}={c.params[k]}" for k in c.explicit)
            c = Component(c.kind, c.name, c.params, c.explicit, f"{c.name}[{full}]")
        out.append(c)
    if len({c.label for c in out}) != len(out):
        raise SuiteError("", "", "two entries of one axis are identical")
    return out


def parse_train(spec, file, field) -> dict:
    if not isinstance(spec, dict):
        raise SuiteError(file, field, f"must be a mapping with keys {', '.join(TRAIN_DEFAULTS)}")
    for key, value in spec.items():
        if key not in TRAIN_DEFAULTS:
            raise SuiteError(file, f"{field}.{key}", f"unknown key; valid keys: {', '.join(TRAIN_DEFAULTS)}")
    out = {**TRAIN_DEFAULTS, **spec}
    for key in ("steps", "batch_size", "log_every"):
        if not isinstance(out[key], int) or isinstance(out[key], bool) or out[key] <= 0:
            raise SuiteError(file, f"{field}.{key}", f"must be a positive integer, got {out[key]!r}")
    if not isinstance(out["lr"], (int, float)) or isinstance(out["lr"], bool) or out["lr"] <= 0:
        raise SuiteError(file, f"{field}.lr", f"must be a positive number, got {out['lr']!r}")
    ema = out["ema"]
    if ema is not None and (not isinstance(ema, (int, float)) or isinstance(ema, bool) or not 0 <= ema < 1):
        raise SuiteError(file, f"{field}.ema", f"must be null or a number in [0, 1), got {ema!r}")
    out["lr"] = float(out["lr"])
    return out


def parse_suite(data, file="<suite>", seeds=None) -> Suite:
    if not isinstance(data, dict):
        raise SuiteError(file, "", f"a suite must be a YAML mapping with keys {', '.join(TOP_KEYS)}; "
                         f"got {type(data).__name__}")
    for key in data:
        if key not in TOP_KEYS:
            raise SuiteError(file, str(key), f"unknown key; valid keys: {', '.join(TOP_KEYS)}")
    for key in ("name", "dataset", "model", "losses", "samplers", "metrics"):
        if key not in data:
            raise SuiteError(file, key, "missing (required)")
    name = data["name"]
    if not isinstance(name, str) or not name or "/" in name:
        raise SuiteError(file, "name", f"must be a non-empty string without '/', got {name!r}")
    version = data.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SuiteError(file, "version", f"must be a positive integer, got {version!r}")
    raw_seeds = seeds if seeds is not None else data.get("seeds", [0])
    if isinstance(raw_seeds, int) and not isinstance(raw_seeds, bool):
        raw_seeds = [raw_seeds]
    if (not isinstance(raw_seeds, list) or not raw_seeds
            or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in raw_seeds)):
        raise SuiteError(file, "seeds", f"must be a non-empty list of non-negative integers, got {raw_seeds!r}")
    if len(set(raw_seeds)) != len(raw_seeds):
        raise SuiteError(file, "seeds", f"contains duplicates: {raw_seeds!r}")
    device = data.get("device", "auto")
    if device not in DEVICES:
        raise SuiteError(file, "device", f"must be one of {', '.join(DEVICES)}, got {device!r}")
    for key in ("description",):
        if key in data and not isinstance(data[key], str):
            raise SuiteError(file, key, "must be a string")
    parsed = {}
    for key, registry in AXES.items():
        items = _as_list(data[key], file, key)
        many = isinstance(data[key], list)
        comps = [parse_component(s, registry, file, f"{key}[{i}]" if many else key) for i, s in enumerate(items)]
        try:
            parsed[key] = _disambiguate(comps)
        except SuiteError:
            raise SuiteError(file, key, "two entries are identical; remove one") from None
    train_items = _as_list(data.get("train", {}), file, "train") if "train" in data else [{}]
    many = isinstance(data.get("train"), list)
    trains = [parse_train(t, file, f"train[{i}]" if many else "train") for i, t in enumerate(train_items)]
    suite = Suite(str(file), name, version, list(raw_seeds), device, parsed["dataset"], parsed["model"], trains,
                  parsed["losses"], parsed["samplers"], parsed["metrics"], data)
    check_compatibility(suite)
    return suite


def check_compatibility(suite: Suite) -> None:
    """Components that cannot work together are rejected before any work."""
    file = suite.path
    for i, ds in enumerate(suite.datasets):
        is_image = bool(getattr(DATASETS[ds.name], "is_image", False))
        for j, m in enumerate(suite.metrics):
            entry = METRICS.entry(m.name)
            if entry.meta.get("needs_image") and not is_image:
                raise SuiteError(file, f"metrics[{j}].name", f"metric '{m.name}' needs image data; "
                                 f"dataset '{ds.name}' is not an image set")
        for j, mdl in enumerate(suite.models):
            ok = MODELS.entry(mdl.name).meta.get("data", "any")
            if ok != "any" and ok != ("image" if is_image else "points"):
                raise SuiteError(file, f"model[{j}].name", f"model '{mdl.name}' works on {ok} data; "
                                 f"dataset '{ds.name}' is {'image' if is_image else 'point'} data")


def load_suite(path: str | Path, seeds=None) -> Suite:
    return parse_suite(load_yaml(path), file=str(path), seeds=seeds)
