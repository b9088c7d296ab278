"""What a record's `metric` column means, for the report and the plots: its table label, unit,
direction, whether a table shows it, whether it is a sample-quality figure.

The runner measures a few figures of its own for every cell (SAMPLER_FIGURES, TRAIN_FIGURES);
every other record comes from a registered metric, whose MetricSpec declares the rest: a metric
`m` gives the record `m`, or `m_<part>` for each declared part, and `m_iters_to_threshold` when it
is computed per iteration of a parallel sampler with a threshold. Samplers may declare extra
per-cell figures (SamplerSpec.extra_figures, e.g. Jacobian-vector products).
A figure may name the settings that define its value (`comparable_only_if`: a wall-clock time
depends on the accelerator), so that a reference number made otherwise is "not comparable".
For the plots: `sequential_twin(record)` is the sequential sampler a parallel one converges to
(SamplerSpec.fixed_point), `is_sampler(record, name, params)` finds its cells.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .registry import METRICS, SAMPLERS


@dataclass(frozen=True)
class Figure:
    name: str
    label: str
    unit: str = ""
    higher_is_better: bool = False
    shown: bool = True          # a column of the paper tables (else csv/json only)
    quality: bool = False       # a sample-quality figure (quality-vs-NFE sweeps, plots)
    headline: int | None = None  # preference rank as the quality figure a plot shows
    order: float = 100          # column order in the tables
    # settings (record columns, e.g. p_metric_bandwidth) without which a reference number of this
    # figure measures something else: a baseline made with another value is "not comparable"
    comparable_only_if: tuple = ()


# The runner's own figures of every sampled cell, in column order.
SAMPLER_FIGURES = (
    Figure("iterations", "iterations", "passes or steps", order=20),
    Figure("nfe", "denoiser evals", order=21),
    Figure("wall_clock", "wall-clock", "s", order=23, comparable_only_if=("p_env_accelerator",)),
    Figure("converged", "converged", "", shown=False),
)
TRAIN_FIGURES = (
    Figure("train_seconds", "train seconds", "s", shown=False),
    Figure("train_final_loss", "final training loss", "", shown=False),
)
RUNNER = {f.name: f for f in SAMPLER_FIGURES + TRAIN_FIGURES}
THRESHOLD_SUFFIX = "_iters_to_threshold"
COMPLETE = "_complete"          # the run directory's commit marker, never a figure


def _metric_figures() -> dict[str, Figure]:
    """Quality figures first (by headline rank, then name), then the runner's figures (order
    20..24), then the other metrics; a metric's parts keep their declared order."""
    out = {}
    for rank, entry in enumerate(METRICS.entries()):
        spec = entry.spec
        if spec.quality:
            base = 10 + (spec.headline if spec.headline is not None and spec.headline < 9 else 9) + rank / 100
        else:
            base = 60 + rank
        # a metric spec may declare the parameters that define its value (e.g. a kernel bandwidth)
        own = tuple(f"p_metric_{k}" for k in getattr(spec, "comparable_only_if", ()) or ())
        if spec.parts:
            for i, (part, (label, unit)) in enumerate(spec.parts.items()):
                out[f"{entry.name}_{part}"] = Figure(f"{entry.name}_{part}", label, unit, spec.higher_is_better,
                                                     quality=spec.quality, order=base + i / 1000,
                                                     comparable_only_if=own)
        else:
            out[entry.name] = Figure(entry.name, spec.label or entry.name, spec.unit, spec.higher_is_better,
                                     quality=spec.quality, headline=spec.headline, order=base,
                                     comparable_only_if=own)
        if spec.per_iteration:
            out[entry.name + THRESHOLD_SUFFIX] = Figure(entry.name + THRESHOLD_SUFFIX,
                                                        f"iteration {spec.label or entry.name} < thr", "pass", order=24,
                                                        comparable_only_if=own + ("p_metric_threshold",))
    for entry in SAMPLERS.entries():
        for name, unit in entry.spec.extra_figures:
            out.setdefault(name, Figure(name, name.replace("_", " "), unit, order=22))
    return out


def figure(name: str, unit: str = "") -> Figure:
    """The figure a record's metric name stands for (an unknown name: a shown column of its own)."""
    if name in RUNNER:
        return RUNNER[name]
    known = _metric_figures()
    if name in known:
        return known[name]
    return Figure(name, name, unit)


def sampler_name(label: str) -> str:
    """The registered name in a sampler label such as 'picard[tolerance=0.1]'."""
    return str(label).split("[", 1)[0]


def is_parallel(sampler_label: str) -> bool:
    """Whether the sampler of a record's label is a parallel one (its spec declares it)."""
    return SAMPLERS.spec(sampler_name(sampler_label)).parallel


def sampler_params(record) -> dict:
    """The sampler parameters of a record (its p_sampler_* columns), completed with the registered
    defaults of its sampler (parameters left out of records, e.g. neutral ones)."""
    name = sampler_name(record["sampler"])
    params = {p.name: p.default for p in SAMPLERS.entry(name).parameters()} if name in SAMPLERS else {}
    for key, value in dict(record).items():
        if str(key).startswith("p_sampler_") and not _missing(value):
            params[str(key)[len("p_sampler_"):]] = value
    return params


def sequential_twin(record) -> tuple[str, dict] | None:
    """(sampler name, parameters) of the sequential sampler whose trajectory the record's parallel
    sampler converges to (its SamplerSpec.fixed_point), or None (not parallel, or undeclared)."""
    name = sampler_name(record["sampler"])
    spec = SAMPLERS.spec(name)
    if not spec.parallel or spec.fixed_point is None:
        return None
    try:
        return spec.fixed_point(sampler_params(record))
    except (KeyError, TypeError, ValueError):         # records of an older sampler version
        return None


def is_sampler(record, name: str, params: dict) -> bool:
    """Whether a record's sampler is `name` with these parameter values (e.g. a sequential twin)."""
    if sampler_name(record["sampler"]) != name:
        return False
    have = sampler_params(record)
    return all(_same(have.get(k), v) for k, v in params.items())


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _same(a, b) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b
