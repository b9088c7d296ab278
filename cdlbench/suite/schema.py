"""Suite schema: components with resolved parameters, cells, the matrix expansion, value ranges.

Every problem is a `SuiteError` naming the file, the field path and what is allowed; the CLI
turns it into one message and exit code 2.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from ..registry import DATASETS, LOSSES, METRICS, MODELS, REGISTRIES, SAMPLERS, Registry, UnknownComponentError
from .yaml_loading import SuiteError, load_yaml  # noqa: F401  (re-exported)

_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


# ---------------------------------------------------------------- schema
TRAIN_DEFAULTS = {"steps": 20000, "batch_size": 128, "lr": 1e-3, "ema": None, "log_every": 100}
TRAIN_OPTIONAL = ("init_from", "checkpoint_every", "batches", "snapshots")   # in the train dict only when given
# train keys that change no weight: out of cache keys and records (snapshots adds p_train_step instead)
EXECUTION_KEYS = ("checkpoint_every", "snapshots")
INIT_FROM_KEYS = ("loss", "train", "resume_optimizer")
# train keys added later, at the value that keeps earlier suites' keys: left out of keys and records
TRAIN_NEUTRAL = {"batches": "random"}
BATCH_ORDERS = ("random", "sequential")
DEFAULT_SAMPLE_BATCH = 250       # neutral value of `sample_batch` (left out of configs and records)
EXECUTORS = ("inline", "local", "submitit")
EXECUTOR_KEYS = {"name": "one of " + ", ".join(EXECUTORS), "jobs": "a positive integer (workers)",
                 "threads": "a positive integer (torch threads per worker)",
                 "slurm_partition": "a string", "slurm_gpus_per_job": "a non-negative integer",
                 "slurm_cpus_per_job": "a positive integer", "slurm_time": "minutes, a positive integer",
                 "slurm_account": "a string", "slurm_mem": "a memory size such as 4G or 16000M",
                 "slurm_qos": "a string", "slurm_constraint": "a string (Slurm features, e.g. a100|h100)",
                 "slurm_gpu_type": "a string (a GPU model, e.g. a100: --gres=gpu:a100:N)",
                 "slurm_setup": "a list of shell lines run before each job (e.g. module load cuda)",
                 "slurm_cluster": "slurm or local"}
TOP_KEYS = ("name", "version", "description", "expected_runtime", "seeds", "device", "sample_batch", "executor",
            "dataset", "model", "train", "losses", "samplers", "metrics")
AXES = {"dataset": DATASETS, "model": MODELS, "losses": LOSSES, "samplers": SAMPLERS, "metrics": METRICS}
DEVICES = ("auto", "cpu", "cuda")


def neutral_values(kind: str, name: str) -> dict:
    """Registry metadata `neutral=` of a component ({} when none or unknown)."""
    registry = next((r for r in REGISTRIES.values() if r.kind == kind), None)
    if registry is None or name not in registry:
        return {}
    return dict(registry.entry(name).neutral)


@dataclass(frozen=True)
class Component:
    """A registered component with resolved parameters (defaults filled in)."""

    kind: str
    name: str
    params: dict            # resolved, JSON-serialisable
    explicit: tuple         # keys the suite gave
    label: str

    @property
    def keyed_params(self) -> dict:
        """The parameters that identify this component in cache keys, derived seeds, run configs
        and records: all of them except those at their registered neutral value (registry
        `neutral={param: value}`: a parameter added later declares the value at which the
        component behaves as it did before it existed, so adding it moves no existing result)."""
        neutral = neutral_values(self.kind, self.name)
        return {k: v for k, v in self.params.items() if not (k in neutral and neutral[k] == v)}

    def key(self) -> str:
        return json.dumps({"name": self.name, **self.keyed_params}, sort_keys=True, default=str)


@dataclass(frozen=True)
class Cell:
    dataset: Component
    model: Component
    train: dict
    loss: Component
    sampler: Component
    seed: int
    train_label: str = ""     # set when the suite lists several train blocks: they must not share names

    @property
    def name(self) -> str:
        train = f"{self.train_label}/" if self.train_label else ""
        return f"{self.dataset.label}/{self.model.label}/{train}{self.loss.label}/{self.sampler.label}/seed={self.seed}"

    def training_key(self) -> str:
        """Hash of everything that changes the trained weights."""
        train = keyed(self.train)
        blob = json.dumps([self.dataset.key(), self.model.key(), json.dumps(train, sort_keys=True),
                           self.loss.key(), self.seed], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def keyed(train: dict) -> dict:
    """A train block without its execution-only keys (they change no number) and without keys at
    their neutral value (TRAIN_NEUTRAL)."""
    return {k: v for k, v in train.items()
            if k not in EXECUTION_KEYS and not (k in TRAIN_NEUTRAL and TRAIN_NEUTRAL[k] == v)}


def train_labels(trains: list[dict]) -> list[str]:
    """'' for a single train block; else 'train[k=v,...]' with the keys that differ between blocks."""
    trains = [keyed(t) for t in trains]
    if len(trains) < 2:
        return [""] * len(trains)
    value = lambda t, k: t.get(k, TRAIN_NEUTRAL.get(k))  # noqa: E731  (a neutral key is left out)
    names = list(dict.fromkeys(k for t in trains for k in t))
    keys = [k for k in names if len({json.dumps(value(t, k), default=str) for t in trains}) > 1]
    return [f"train[{','.join(f'{k}={value(t, k)}' for k in keys)}]" for t in trains]


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
    sample_batch: int = DEFAULT_SAMPLE_BATCH    # samples per global batch of sharded sampling
    executor: dict = None                       # how to run it (changes no number): EXECUTOR_KEYS

    def cells(self) -> list[Cell]:
        labels = train_labels(self.trains)
        return [Cell(d, m, t, lo, s, seed, labels[i]) for d, m, (i, t), lo, s, seed in itertools.product(
            self.datasets, self.models, enumerate(self.trains), self.losses, self.samplers, self.seeds)]

    def resolved(self) -> dict:
        comp = lambda c: {"name": c.name, **c.keyed_params}  # noqa: E731
        return {"name": self.name, "version": self.version, "seeds": list(self.seeds), "device": self.device,
                "dataset": [comp(c) for c in self.datasets], "model": [comp(c) for c in self.models],
                "train": [keyed(t) for t in self.trains], "losses": [comp(c) for c in self.losses],
                "samplers": [comp(c) for c in self.samplers], "metrics": [comp(c) for c in self.metrics],
                **({"sample_batch": self.sample_batch} if self.sample_batch != DEFAULT_SAMPLE_BATCH else {}),
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
        if len(value) > MAX_AXIS_ENTRIES:
            raise SuiteError(file, field, f"{len(value):,} entries; at most {MAX_AXIS_ENTRIES:,} are allowed "
                             f"(an upper bound on the work one suite may ask for)")
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
        problem = value_problem(key, value, p.default, entry.constraints.get(key))
        if problem:
            raise SuiteError(file, f"{field}.{key}", f"{problem} (got {value!r})")
        nested = getattr(entry.spec, "nested", {}).get(key)   # LossSpec.nested (other kinds have none)
        if nested and value is not None:   # a component inside a component (cdl's base loss)
            _check_nested(value, nested, file, f"{field}.{key}", name)
    for p in params.values():
        if p.required and p.name not in given:
            raise SuiteError(file, f"{field}.{p.name}", f"required by {registry.kind} '{name}'")
    resolved = {k: copy.deepcopy(given.get(k, p.default)) for k, p in params.items()}
    resolved = {k: (list(v) if isinstance(v, tuple) else v) for k, v in resolved.items()}
    shown = [k for k in given if given[k] != params[k].default]   # label: what differs from defaults
    label = name + (f"[{','.join(f'{k}={given[k]}' for k in shown)}]" if shown else "")
    return Component(registry.kind, name, resolved, tuple(given), label)


# ---------------------------------------------------------------- value ranges
def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _gt0(v):
    return None if v > 0 else "must be > 0"


def _ge0(v):
    return None if v >= 0 else "must be >= 0"


def _unit(v):
    return None if 0 <= v <= 1 else "must be a probability in [0, 1]"


# Ranges implied by a parameter's name, checked for every component (plugins included) in
# addition to its own constraints: counts and sizes > 0, scales and tolerances > 0,
# weights >= 0, probabilities and decay rates in [0, 1].
_NAMED_RANGES = {
    **dict.fromkeys(("steps", "width", "blocks", "emb_dim", "window", "max_iters", "chunk_size", "mc_points",
                     "samples_per_batch", "batch_size", "resolution", "max_images", "log_every"), _gt0),
    **dict.fromkeys(("tolerance", "tol", "bandwidth", "threshold", "lr", "std", "scale", "clip", "rho",
                     "radius", "variance", "P_std", "S_noise", "z_range"), _gt0),
    **dict.fromkeys(("weight", "base_weight", "jitter", "noise", "S_churn", "S_tmin", "S_tmax", "num_classes"),
                    _ge0),
    **dict.fromkeys(("eta", "p", "prob", "dropout", "ema", "p_uncond", "label_dropout"), _unit),
}


def named_range(name: str):
    """The default range check for a parameter name, or None."""
    if name in _NAMED_RANGES:
        return _NAMED_RANGES[name]
    if name.startswith(("n_", "num_")) or name.endswith(("_steps", "_size", "_points", "_iters")):
        return _gt0
    if name.startswith("sigma") or name.endswith(("_scale", "_clip", "_tolerance", "_std")):
        return _gt0
    if name.endswith("_weight"):
        return _ge0
    if name.endswith(("_prob", "_probability")) or name.startswith("prob"):
        return _unit
    return None


# Upper bounds of the integers that set work (a typo such as steps: 2e9 would run for weeks, an
# n_samples of 10^9 would exhaust memory): far above anything a suite here needs.
WORK_BOUNDS = {"steps": 10_000_000, "batch_size": 1_000_000, "width": 65_536, "n_samples": 10_000_000,
               "n_train": 100_000_000, "mc_points": 1_000_000, "samples_per_batch": 100_000, "max_iters": 1_000_000,
               "window": 1_000_000, "chunk_size": 1 << 31, "emb_dim": 65_536, "blocks": 1_000}
MAX_SEEDS = 1000
MAX_SEED = (1 << 63) - 1
MAX_SNAPSHOTS = 100          # train.snapshots: each is a saved copy of the weights and one more cell per sampler
MAX_AXIS_ENTRIES = 1000      # entries of one list-valued axis (dataset, model, train, losses, samplers, metrics)
MAX_EVALUATIONS = 100_000    # cells x snapshot steps of a whole suite (the largest committed suite has 72)


def work_bound_problem(key: str, value) -> str | None:
    bound = WORK_BOUNDS.get(key)
    if bound is not None and _is_number(value) and value > bound:
        return f"must be <= {bound:,} (an upper bound on the work one suite may ask for)"
    return None


def value_problem(key: str, value, default, constraint) -> str | None:
    """What is wrong with a parameter value (None when it is allowed): NaN never; infinity only
    where the default is infinite; then the component's own constraint and the named range."""
    if isinstance(value, float) and math.isnan(value):
        return "must be a number, not NaN"
    if isinstance(value, float) and math.isinf(value) and not (isinstance(default, float) and math.isinf(default)):
        return "must be finite"
    checks = [constraint, named_range(key) if _is_number(value) else None, lambda v: work_bound_problem(key, v)]
    for check in filter(None, checks):
        try:
            problem = check(value)
        except Exception as exc:   # a constraint that cannot judge this value rejects it
            problem = f"not an allowed value ({type(exc).__name__})"
        if problem:
            return problem
    return None


def _check_nested(value, registry_kind: str, file, field: str, owner: str) -> None:
    """Validate a nested component given as a name or a mapping with 'name'."""
    registry = REGISTRIES[registry_kind]
    if isinstance(value, str) and value not in registry:
        raise SuiteError(file, field, registry.unknown_message(value))
    spec = {"name": value} if isinstance(value, str) else value
    if not isinstance(spec, dict):
        raise SuiteError(file, field, f"must be a {registry.kind} name or a mapping with 'name'")
    inner = parse_component(spec, registry, file, field)
    if inner.name == owner:
        raise SuiteError(file, f"{field}.name" if isinstance(value, dict) else field,
                         f"{registry.kind} '{owner}' cannot wrap itself; "
                         f"choose another: {', '.join(n for n in registry.names() if n != owner)}")


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
        if key not in TRAIN_DEFAULTS and key not in TRAIN_OPTIONAL:
            raise SuiteError(file, f"{field}.{key}", f"unknown key; valid keys: "
                             f"{', '.join((*TRAIN_DEFAULTS, *TRAIN_OPTIONAL))}")
    out = {**TRAIN_DEFAULTS, **spec}
    if "init_from" in out:
        out["init_from"] = parse_init_from(out["init_from"], file, f"{field}.init_from")
    if "snapshots" in out:
        out["snapshots"] = parse_snapshots(out["snapshots"], out.get("steps"), file, f"{field}.snapshots")
    if out.get("batches", "random") not in BATCH_ORDERS:
        raise SuiteError(file, f"{field}.batches", f"must be one of {', '.join(BATCH_ORDERS)} (random: indices drawn "
                         f"with replacement; sequential: the training set in its order), got {out['batches']!r}")
    every = out.get("checkpoint_every")
    if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every <= 0):
        raise SuiteError(file, f"{field}.checkpoint_every", f"must be null or a positive integer (steps between "
                         f"training checkpoints), got {every!r}")
    for key in ("steps", "batch_size", "log_every"):
        if not isinstance(out[key], int) or isinstance(out[key], bool) or out[key] <= 0:
            raise SuiteError(file, f"{field}.{key}", f"must be a positive integer, got {out[key]!r}")
        problem = work_bound_problem(key, out[key])
        if problem:
            raise SuiteError(file, f"{field}.{key}", f"{problem}, got {out[key]!r}")
    lr = out["lr"]
    if not _is_number(lr) or not math.isfinite(lr) or lr <= 0:
        raise SuiteError(file, f"{field}.lr", f"must be a positive finite number, got {lr!r}")
    ema = out["ema"]
    if ema is not None and (not _is_number(ema) or not 0 <= ema < 1):
        raise SuiteError(file, f"{field}.ema", f"must be null or a number in [0, 1), got {ema!r}")
    out["lr"] = float(out["lr"])
    return out


def parse_init_from(value, file, field):
    """`init_from`: a checkpoint file (path), or a pretraining {loss, train, resume_optimizer} of the
    same dataset, model and seed, trained (or taken from the cache) first. The mapping is stored
    resolved (the loss with its parameters, the train block with its defaults), so the pretraining's
    settings enter the fine-tuned model's training key."""
    if isinstance(value, str) and value:
        return value
    if not isinstance(value, dict):
        raise SuiteError(file, field, f"must be the path of a checkpoint file or a mapping with keys "
                         f"{', '.join(INIT_FROM_KEYS)} (a pretraining of the same dataset, model and seed), got {value!r}")
    unknown = [k for k in value if k not in INIT_FROM_KEYS]
    if unknown:
        raise SuiteError(file, f"{field}.{unknown[0]}", f"unknown key; valid keys: {', '.join(INIT_FROM_KEYS)}")
    if "loss" not in value:
        raise SuiteError(file, f"{field}.loss", "missing: the loss of the pretraining (e.g. ddpm)")
    loss_spec = {"name": value["loss"]} if isinstance(value["loss"], str) else value["loss"]
    loss = parse_component(loss_spec, LOSSES, file, f"{field}.loss")
    pre = parse_train(value.get("train") or {}, file, f"{field}.train")
    if "init_from" in pre or "snapshots" in pre:
        raise SuiteError(file, f"{field}.train", "a pretraining cannot itself have init_from or snapshots")
    resume = value.get("resume_optimizer", False)
    if not isinstance(resume, bool):
        raise SuiteError(file, f"{field}.resume_optimizer", f"must be true or false, got {resume!r}")
    return {"loss": {"name": loss.name, **loss.keyed_params}, "train": keyed(pre), "resume_optimizer": resume}


def parse_snapshots(value, steps, file, field) -> list:
    """Training steps at which the weights are also evaluated: increasing positive integers <= steps,
    at most MAX_SNAPSHOTS of them (each is a saved copy of the weights and one more cell per sampler)."""
    if isinstance(value, list) and len(value) > MAX_SNAPSHOTS:
        raise SuiteError(file, field, f"{len(value):,} snapshots; at most {MAX_SNAPSHOTS:,} snapshots are allowed "
                         f"(each saves the weights and adds a cell per sampler, loss and seed)")
    ok = (isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
          and all(a < b for a, b in zip(value, value[1:])))
    if not ok:
        raise SuiteError(file, field, f"must be a non-empty increasing list of positive step counts, got {value!r}")
    if isinstance(steps, int) and value[-1] > steps:
        raise SuiteError(file, field, f"{value[-1]} is beyond train.steps ({steps}); snapshots must be <= steps")
    return list(value)


def parse_executor(spec, file) -> dict:
    """The suite's `executor:` block (how to run; the command line wins over it)."""
    if not isinstance(spec, dict):
        raise SuiteError(file, "executor", f"must be a mapping with keys {', '.join(EXECUTOR_KEYS)}")
    for key, value in spec.items():
        if key not in EXECUTOR_KEYS:
            raise SuiteError(file, f"executor.{key}", f"unknown key; valid keys: {', '.join(EXECUTOR_KEYS)}")
        ok = {"name": lambda v: v in EXECUTORS,
              "slurm_partition": lambda v: isinstance(v, str) and v != "",
              "slurm_account": lambda v: isinstance(v, str) and v != "",
              "slurm_mem": lambda v: isinstance(v, str) and re.fullmatch(r"[1-9][0-9]*[KMGT]?", v) is not None,
              "slurm_qos": lambda v: isinstance(v, str) and v != "",
              "slurm_constraint": lambda v: isinstance(v, str) and v != "",
              "slurm_gpu_type": lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", v) is not None,
              "slurm_setup": lambda v: isinstance(v, list) and all(isinstance(x, str) and "\n" not in x for x in v),
              "slurm_cluster": lambda v: v in ("slurm", "local"),
              "slurm_gpus_per_job": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0}.get(
            key, lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0)
        if not ok(value):
            raise SuiteError(file, f"executor.{key}", f"must be {EXECUTOR_KEYS[key]}, got {value!r}")
    return dict(spec)


def parse_suite(data, file="<suite>", seeds=None) -> Suite:
    if not isinstance(data, dict):
        raise SuiteError(file, "", f"a suite must be a YAML mapping with keys {', '.join(TOP_KEYS)}; "
                         f"got {type(data).__name__}")
    for key in data:
        if key not in TOP_KEYS:
            close = difflib.get_close_matches(str(key), TOP_KEYS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SuiteError(file, str(key), f"unknown key; {hint}valid keys: {', '.join(TOP_KEYS)}")
    for key in ("name", "dataset", "model", "losses", "samplers", "metrics"):
        if key not in data:
            raise SuiteError(file, key, "missing (required)")
    name = data["name"]
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name) or set(name) == {"."}:
        raise SuiteError(file, "name", f"must be a non-empty string of letters, digits, '_', '-', '.' "
                         f"(it names the run directory), got {name!r}")
    version = data.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SuiteError(file, "version", f"must be a positive integer, got {version!r}")
    raw_seeds = seeds if seeds is not None else data.get("seeds", [0])
    if isinstance(raw_seeds, int) and not isinstance(raw_seeds, bool):
        raw_seeds = [raw_seeds]
    if (not isinstance(raw_seeds, list) or not raw_seeds
            or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in raw_seeds)):
        raise SuiteError(file, "seeds", f"must be a non-empty list of non-negative integers, got {raw_seeds!r}")
    if len(raw_seeds) > MAX_SEEDS or max(raw_seeds) > MAX_SEED:
        raise SuiteError(file, "seeds", f"at most {MAX_SEEDS} seeds, each below 2^63, got {len(raw_seeds)} "
                         f"(largest {max(raw_seeds)})")
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
    for i, t in enumerate(trains):
        if keyed(t) in [keyed(u) for u in trains[:i]]:
            raise SuiteError(file, f"train[{i}]", f"identical to train[{trains.index(t)}]; remove one")
    sample_batch = data.get("sample_batch", DEFAULT_SAMPLE_BATCH)
    if not isinstance(sample_batch, int) or isinstance(sample_batch, bool) or sample_batch <= 0:
        raise SuiteError(file, "sample_batch", f"must be a positive integer (samples per global batch of "
                         f"sharded sampling; default {DEFAULT_SAMPLE_BATCH}), got {sample_batch!r}")
    executor = parse_executor(data.get("executor", {}), file)
    _check_expansion(file, parsed, trains, raw_seeds)
    suite = Suite(str(file), name, version, list(raw_seeds), device, parsed["dataset"], parsed["model"], trains,
                  parsed["losses"], parsed["samplers"], parsed["metrics"], data, sample_batch, executor)
    from .compat import check_compatibility   # compat reads this module's types
    check_compatibility(suite)
    return suite


def _check_expansion(file, parsed: dict, trains: list, seeds: list) -> None:
    """SuiteError unless cells x snapshot steps stay within MAX_EVALUATIONS, naming each axis' size."""
    steps = sum(len(t.get("snapshots") or [t["steps"]]) for t in trains)
    sizes = [(key, len(parsed[key])) for key in ("dataset", "model", "losses", "samplers")]
    total = steps * len(seeds) * math.prod(n for _, n in sizes)
    if total > MAX_EVALUATIONS:
        shown = " x ".join(f"{key} {n}" for key, n in sizes[:2] + [("train", len(trains))] + sizes[2:]
                           + [("seeds", len(seeds)), ("snapshots", max(len(t.get("snapshots") or [1]) for t in trains))])
        raise SuiteError(file, "", f"expands to {total:,} evaluations (cells x snapshot steps: {shown}); "
                         f"at most {MAX_EVALUATIONS:,} are allowed (an upper bound on the work one suite may ask for)")


def load_suite(path: str | Path, seeds=None) -> Suite:
    return parse_suite(load_yaml(path), file=str(path), seeds=seeds)
