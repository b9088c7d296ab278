"""What a component is, declared in its registration: `@SAMPLERS.register("picard", spec=SamplerSpec(...))`.

Validation, the runner, the report, the plots and `cdlbench list` read these specs; no code
outside a component's own file tests a component's name. Specs are frozen dataclasses, so a
misspelt field is a TypeError where the component registers, not a silent default.
A field may be a value or a function of the component's resolved parameters (`declared`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable


def declared(value, params: dict):
    """A spec field's value for these parameters (the field may be a function of them)."""
    return value(params) if callable(value) else value


@dataclass(frozen=True)
class SamplerSpec:
    """grid: "ddpm" (subset of the 1000-step DDPM grid) or "edm" (Karras sigma grid), or a
    function of the parameters; param_grids {param: {value: grid}} the grid a choice needs.
    noise: "per_step" (takes pre-sampled standard normals [steps, N, *shape] as `noise`; a
    sampler fed the same noise gives the same samples) or "none".
    stochastic: the samples depend on that noise (for these parameters).
    parallel: iterative over the whole trajectory: reports passes as `iterations`, can record the
    state after each pass (`trace`), converges to `fixed_point`.
    chunk_param: the parameter bounding the points of one denoiser call (halved on out-of-memory);
    points_per_call(params, n): the points one call would take without that bound.
    nfe(params) -> (planned denoiser evaluations per sample batch, is it only an upper bound).
    fixed_point(params) -> (sequential sampler name, its params) that this sampler reproduces
    at a tiny tolerance fed the same noise (parallel samplers), else None.
    conditional: takes `class_labels` for class-conditional denoisers.
    exact_tolerance: parameter values that make a parallel sampler converge exactly (contract tests).
    """

    grid: Any = None
    param_grids: dict = field(default_factory=dict)
    noise: str = "none"
    stochastic: Any = False
    parallel: bool = False
    chunk_param: str | None = None
    points_per_call: Callable[[dict, int], int] | None = None
    nfe: Callable[[dict], tuple[int, bool]] | None = None
    fixed_point: Callable[[dict], tuple[str, dict] | None] | None = None
    conditional: bool = True
    exact_tolerance: dict = field(default_factory=dict)
    extra_figures: tuple = ()          # further per-cell figures (SampleResult.extra keys), e.g. jvp


@dataclass(frozen=True)
class MetricSpec:
    """unit, higher_is_better and label (table header) of the value; parts: the names a metric
    that returns a dict gives its values (record `<name>_<part>`, header label[part]).
    needs: what it needs besides samples, any of "images", "labels" (class-conditional samples),
    "classifier" (a dataset that classifies), "exact_score" (a dataset with one), "exact_density" (a
    dataset with its exact log-density), "points".
    context: the runner arguments its __call__ takes (denoiser, dataset, result, replay, labels).
    per_iteration: also computed on the state after every pass of a parallel sampler (curve),
    with `<name>_iters_to_threshold` when its `threshold` parameter is set.
    quality: a sample-quality figure (quality-vs-NFE sweeps, plots); headline: preference rank
    of the quality figure a plot shows first (lower first; None: never headline)."""

    unit: str = ""
    higher_is_better: bool = False
    label: str = ""
    parts: dict = field(default_factory=dict)      # part -> (label, unit)
    needs: Any = ()
    context: tuple = ()
    per_iteration: bool = False
    quality: bool = True
    headline: int | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """kind: "points" or "images"; labelled: True/False, or None when only known once loaded;
    exact_score: the dataset knows its exact (noised) score; classifier: it can classify a sample;
    exact_density: it gives the exact log-density of its law (`log_density(x) -> [N]`)."""

    kind: str = "points"
    labelled: Any = False
    exact_score: bool = False
    classifier: bool = False
    exact_density: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """data: the data kind it works on ("any", "points", "images"); conditional: class-conditional
    (a value or a function of the parameters)."""

    data: str = "any"
    conditional: Any = False


@dataclass(frozen=True)
class LossSpec:
    """nested: {param: registry kind} of components inside this one (cdl's base loss)."""

    nested: dict = field(default_factory=dict)


SPEC_TYPES = {"sampler": SamplerSpec, "metric": MetricSpec, "dataset": DatasetSpec, "model": ModelSpec,
              "loss": LossSpec}


def spec_field_names(kind: str) -> list[str]:
    return [f.name for f in fields(SPEC_TYPES[kind])]


def describe_spec(spec) -> str:
    """One line for `cdlbench list`: the declared facts that differ from the kind's defaults
    (functions of the parameters shown as 'depends on parameters')."""
    if spec is None:
        return ""
    default = type(spec)()
    parts = []
    for f in fields(spec):
        value = getattr(spec, f.name)
        if value == getattr(default, f.name):
            continue
        if callable(value):
            parts.append(f"{f.name}: depends on parameters")
        elif isinstance(value, dict) and value and all(isinstance(v, tuple) for v in value.values()):
            parts.append(f"{f.name}: {', '.join(value)}")
        else:
            parts.append(f"{f.name}: {value}")
    return "; ".join(parts)
