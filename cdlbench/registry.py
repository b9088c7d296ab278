"""One `Registry` class, one instance per kind of component (lm-evaluation-harness style).

A component is a callable (class or function) registered under a name. Its keyword
parameters, their defaults and annotations are read from its signature, so suites can be
validated before anything runs and `cdlbench list` can print them.
"""
from __future__ import annotations

import difflib
import inspect
import traceback
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable


# Arguments supplied by the runner (data, generators, shapes), never by a suite.
RUNTIME_ARGS = frozenset({"denoiser", "x_T", "generator", "noise", "trace", "samples",
                          "shape", "data_var", "num_classes", "device", "cache_dir", "reference_key",
                          "class_labels", "labels"})


class UnknownComponentError(KeyError):
    """Raised for a name that is not registered; the message suggests the closest names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    annotation: Any
    required: bool

    def describe(self) -> str:
        kind = getattr(self.annotation, "__name__", None) or str(self.annotation)
        if self.required:
            return f"{self.name}: {kind} (required)"
        return f"{self.name}: {kind} = {self.default!r}"


@dataclass
class Entry:
    name: str
    obj: Callable
    doc: str
    constraints: dict[str, Callable[[Any], str | None]] = field(default_factory=dict)
    spec: Any = None                 # the kind's spec (cdlbench/specs.py): what the component is
    neutral: dict[str, Any] = field(default_factory=dict)

    def parameters(self) -> list[Parameter]:
        """The parameters a suite may set (runtime and context arguments excluded)."""
        return [p for p in self.all_parameters() if p.name not in RUNTIME_ARGS]

    def all_parameters(self) -> list[Parameter]:
        target = self.obj.__init__ if inspect.isclass(self.obj) else self.obj
        sig = inspect.signature(target)
        try:
            hints = __import__("typing").get_type_hints(target)
        except Exception:  # pragma: no cover - unresolved forward refs
            hints = {}
        out = []
        for p in sig.parameters.values():
            if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.kind == p.POSITIONAL_ONLY:
                continue
            out.append(Parameter(p.name, None if p.default is p.empty else p.default,
                                 hints.get(p.name, p.annotation), p.default is p.empty))
        return out


class Registry:
    """Name -> component. `REG[name]` returns the component; unknown names fail helpfully."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        _ALL_REGISTRIES.append(self)

    def register(self, name: str, *, spec=None, constraints: dict | None = None, neutral: dict | None = None):
        """Decorator: `@SAMPLERS.register("picard", spec=SamplerSpec(...))`. `spec` declares what
        the component is (cdlbench/specs.py; default: the kind's default spec); `constraints`
        {param: check(value) -> problem or None}; `neutral` {param: value at which the component
        behaves as before the parameter existed} (left out of keys and records)."""
        from .specs import SPEC_TYPES

        spec_type = SPEC_TYPES.get(self.kind)          # a registry of another kind declares no spec
        spec = spec_type() if spec is None and spec_type else spec
        if spec_type and not isinstance(spec, spec_type):
            raise TypeError(f"{self.kind} {name!r}: spec must be a {spec_type.__name__}, got {type(spec).__name__}")

        def decorate(obj):
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            doc = inspect.getdoc(obj) or ""
            params = {p.name for p in Entry(name, obj, "").parameters()}
            for key in list(constraints or {}) + list(neutral or {}):
                if key not in params:
                    raise TypeError(f"{self.kind} {name!r}: constraint or neutral value for unknown parameter {key!r}; "
                                    f"parameters: {', '.join(sorted(params)) or '(none)'}")
            self._entries[name] = Entry(name, obj, doc.split("\n\n")[0].replace("\n", " "),
                                        dict(constraints or {}), spec, dict(neutral or {}))
            return obj

        return decorate

    def unregister(self, name: str) -> None:
        """Remove a component (tests and plugins that register temporarily)."""
        self._entries.pop(name, None)

    def spec(self, name: str, default=None):
        """The spec of a registered component; `default` (else the kind's default spec) for a
        name not registered here (e.g. a plugin absent when a report is read)."""
        from .specs import SPEC_TYPES

        if name in self:
            return self.entry(name).spec
        return default if default is not None else SPEC_TYPES[self.kind]()

    def entry(self, name: str) -> Entry:
        _load_plugins()
        if name not in self._entries:
            raise UnknownComponentError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        names = sorted(self._entries)
        close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        failed = "".join(f"; {f.short()} (it may have provided it)" for f in PLUGIN_FAILURES)
        return f"unknown {self.kind} {name!r}{hint} available: {', '.join(names)}{failed}"

    def __getitem__(self, name: str):
        return self.entry(name).obj

    def __contains__(self, name: str) -> bool:
        _load_plugins()
        return name in self._entries

    def names(self) -> list[str]:
        _load_plugins()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def build(self, name: str, params: dict | None = None, **context):
        """Instantiate/bind a component with suite parameters plus runner context
        (context keys the component does not accept are dropped)."""
        entry = self.entry(name)
        accepted = {p.name for p in entry.all_parameters()}
        kwargs = {k: v for k, v in context.items() if k in accepted}
        kwargs.update(params or {})
        return entry.obj(**kwargs)


_ALL_REGISTRIES: list[Registry] = []      # every registry (components, report formats): a failed plugin leaves none

DATASETS = Registry("dataset")
MODELS = Registry("model")
LOSSES = Registry("loss")
SAMPLERS = Registry("sampler")
METRICS = Registry("metric")
REGISTRIES = {"datasets": DATASETS, "models": MODELS, "losses": LOSSES,
              "samplers": SAMPLERS, "metrics": METRICS}

_plugins_loaded = False


COMPONENT_PACKAGES = ("datasets", "models", "losses", "samplers", "metrics")


class PluginImportWarning(UserWarning):
    """A plugin (entry point of `cdlbench.plugins`) failed to import; the built-ins still work."""


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that raised while it was imported: its entry point name, module (the entry
    point's value), distribution and the error (its type, message and where it was raised)."""

    name: str
    module: str
    distribution: str
    error: str

    def short(self) -> str:
        package = f", package {self.distribution}" if self.distribution else ""
        return f"plugin {self.name!r} (module {self.module}{package}) failed to import: {self.error}"

    def __str__(self) -> str:
        return (f"{self.short()}; its components are not available (the built-in ones are); fix or uninstall "
                f"the plugin")


PLUGIN_FAILURES: list[PluginFailure] = []


def load_components() -> None:
    """Import the built-in component packages (each kind's __init__ imports its own files, whose
    decorators register them), then third-party components of the entry-point group
    `cdlbench.plugins`. Called on the first registry lookup. A plugin that raises while it is
    imported is left out whole (what it registered before it raised is removed), recorded in
    PLUGIN_FAILURES and named in a PluginImportWarning; the built-ins and other plugins load."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from . import datasets, losses, metrics, models, samplers  # noqa: F401  (COMPONENT_PACKAGES)
    for ep in metadata.entry_points(group="cdlbench.plugins"):
        before = {id(r): dict(r._entries) for r in _ALL_REGISTRIES}
        try:
            ep.load()
        except (Exception, SystemExit) as exc:
            for r in _ALL_REGISTRIES:
                r._entries = before.get(id(r), {})
            failure = PluginFailure(ep.name, ep.value, getattr(getattr(ep, "dist", None), "name", "") or "",
                                    _describe(exc))
            PLUGIN_FAILURES.append(failure)
            warnings.warn(str(failure), PluginImportWarning, stacklevel=3)


def _describe(exc: BaseException) -> str:
    """'RuntimeError: message (at file:line)', the line the plugin raised from."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}{': ' + message if message else ''}{where}"


_load_plugins = load_components
