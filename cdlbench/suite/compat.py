"""Compatibility checks: components that cannot work together are rejected before any work,
from what each component declares in its registration spec (cdlbench/specs.py)."""
from __future__ import annotations

from ..registry import DATASETS, METRICS, MODELS, SAMPLERS
from ..specs import declared
from .schema import Component, Suite, _is_number
from .yaml_loading import SuiteError


def _axis_field(suite: Suite, key: str, i: int) -> str:
    """Field path of entry i of an axis: 'samplers[1]' for a list, 'samplers' for a single mapping."""
    return f"{key}[{i}]" if isinstance(suite.raw.get(key), list) else key


def dataset_facts(comp: Component) -> dict:
    """What validation can know about a dataset without loading it, from its spec: image or points,
    labels (True, False or None = only known once loaded), exact score, classifier."""
    spec = DATASETS.entry(comp.name).spec
    return {"image": declared(spec.kind, comp.params) == "images", "labelled": declared(spec.labelled, comp.params),
            "exact_score": bool(declared(spec.exact_score, comp.params)),
            "classifier": bool(declared(spec.classifier, comp.params)),
            "exact_density": bool(declared(getattr(spec, "exact_density", False), comp.params))}


def model_is_conditional(comp: Component) -> bool | None:
    """A class-conditional model, as its spec declares (None: cannot be known before loading)."""
    return declared(MODELS.entry(comp.name).spec.conditional, comp.params)


def metric_needs(comp: Component) -> set:
    return set(declared(METRICS.entry(comp.name).spec.needs, comp.params) or ())


# (lower, upper) parameter pairs that must be ordered wherever a component has both
_ORDERED = (("sigma_min", "sigma_max", "<"), ("S_tmin", "S_tmax", "<="), ("min_steps", "max_steps", "<="))
DDPM_GRID_STEPS = 1000


def _check_ordered(comp: Component, file, field: str) -> None:
    for lo, hi, op in _ORDERED:
        a, b = comp.params.get(lo), comp.params.get(hi)
        if _is_number(a) and _is_number(b) and not (a < b if op == "<" else a <= b):
            raise SuiteError(file, f"{field}.{hi if hi in comp.explicit else lo}",
                             f"{lo} must be {op} {hi}, got {lo}={a!r}, {hi}={b!r}")


def _check_grid(comp: Component, file, field: str) -> None:
    """Samplers declare their time grid (SamplerSpec.grid: "ddpm" for the 1000-step DDPM grid, "edm"
    for a sigma grid) and, through param_grids={param: {value: grid}}, the grid each choice of a
    parameter needs (a drift, a schedule). All must agree: a DDPM drift cannot run on a sigma grid."""
    spec = SAMPLERS.entry(comp.name).spec
    own = declared(spec.grid, comp.params)
    needs = [(None, None, own)] if isinstance(own, str) and not spec.param_grids else []
    for param, table in spec.param_grids.items():
        value = comp.params.get(param)
        if isinstance(table, dict) and value in table:
            needs.append((param, value, table[value]))
    grids = {g for _, _, g in needs}
    if len(grids) > 1:
        (p1, v1, g1), (p2, v2, g2) = needs[0], next(n for n in needs if n[2] != needs[0][2])
        table2 = spec.param_grids.get(p2, {}) if p2 else {}
        allowed = [v for v, g in table2.items() if g == g1]
        raise SuiteError(file, f"{field}.{p2}", f"{p2} {v2!r} needs the {g2} grid, but {p1} {v1!r} runs on the "
                         f"{g1} grid; {p2} values for the {g1} grid: {', '.join(map(str, allowed)) or '(none)'}")
    grid = grids.pop() if grids else own
    steps = comp.params.get("steps")
    if grid == "ddpm" and _is_number(steps) and steps > DDPM_GRID_STEPS:
        raise SuiteError(file, f"{field}.steps", f"must be <= {DDPM_GRID_STEPS} (a subset of the "
                         f"{DDPM_GRID_STEPS}-step DDPM grid), got {steps!r}")


def _names(registry, keep) -> str:
    return ", ".join(e.name for e in registry.entries() if keep(e.spec)) or "none registered"


def _check_metric(suite: Suite, ds: Component, facts: dict, j: int, m: Component) -> None:
    """A metric's declared needs (MetricSpec.needs) against the dataset's and models' specs."""
    file, field = suite.path, f"{_axis_field(suite, 'metrics', j)}.name"
    kind = "image" if facts["image"] else "point"
    needs = metric_needs(m)
    if "images" in needs and not facts["image"]:
        raise SuiteError(file, field, f"metric '{m.name}' needs image data, but dataset '{ds.name}' is {kind} data; "
                         f"metrics for {kind} data: {_names(METRICS, lambda s: 'images' not in s.needs)}")
    if "classifier" in needs and not facts["classifier"]:
        raise SuiteError(file, field, f"metric '{m.name}' needs a dataset with a classifier, but '{ds.name}' has none; "
                         f"datasets with one: {_names(DATASETS, lambda s: s.classifier)}")
    if "exact_score" in needs and not facts["exact_score"]:
        raise SuiteError(file, field, f"metric '{m.name}' needs a dataset with an exact score, but '{ds.name}' has "
                         f"none; datasets with one: {_names(DATASETS, lambda s: s.exact_score)}")
    if "exact_density" in needs and not facts["exact_density"]:
        raise SuiteError(file, field, f"metric '{m.name}' needs a dataset with an exact density, but '{ds.name}' has "
                         f"none; datasets with one: {_names(DATASETS, lambda s: s.exact_density)}")
    for k, mdl in enumerate(suite.models):
        conditional = model_is_conditional(mdl)
        where = f"'{mdl.label}' ({_axis_field(suite, 'model', k)})"
        if "labels" in needs and conditional is False:
            raise SuiteError(file, field, f"metric '{m.name}' scores class-conditional samples, but model {where} "
                             f"is unconditional; set 'conditional: true' on it")
        if "exact_score" in needs and conditional:
            raise SuiteError(file, field, f"metric '{m.name}' compares the unconditional score, but model {where} "
                             f"is class-conditional")


def _check_model(suite: Suite, ds: Component, facts: dict, j: int, mdl: Component) -> None:
    """A model's declared data kind and conditioning (ModelSpec) against the dataset's spec."""
    file, field = suite.path, _axis_field(suite, "model", j)
    kind = "images" if facts["image"] else "points"
    word = {"images": "image", "points": "point"}
    ok = declared(MODELS.entry(mdl.name).spec.data, mdl.params)
    if ok not in ("any", kind):
        fits = _names(MODELS, lambda s: s.data in ("any", kind))
        raise SuiteError(file, f"{field}.name", f"model '{mdl.name}' works on {word.get(ok, ok)} data, but dataset "
                         f"'{ds.name}' is {word[kind]} data; models for {word[kind]} data: {fits}")
    if model_is_conditional(mdl) and facts["labelled"] is False:
        flag = next((k for k in ("conditional", "num_classes") if k in mdl.explicit), "name")
        raise SuiteError(file, f"{field}.{flag}", f"model '{mdl.name}' is class-conditional, but dataset "
                         f"'{ds.name}' has no labels; use an unconditional model or a labelled dataset "
                         f"({_names(DATASETS, lambda s: s.labelled is True)})")


def check_compatibility(suite: Suite) -> None:
    """Components that cannot work together are rejected before any work."""
    file = suite.path
    for key, comps in (("dataset", suite.datasets), ("model", suite.models), ("losses", suite.losses),
                       ("samplers", suite.samplers), ("metrics", suite.metrics)):
        for i, comp in enumerate(comps):
            _check_ordered(comp, file, _axis_field(suite, key, i))
    for i, comp in enumerate(suite.samplers):
        _check_grid(comp, file, _axis_field(suite, "samplers", i))
    for ds in suite.datasets:
        facts = dataset_facts(ds)
        for j, m in enumerate(suite.metrics):
            _check_metric(suite, ds, facts, j, m)
        for j, mdl in enumerate(suite.models):
            _check_model(suite, ds, facts, j, mdl)
