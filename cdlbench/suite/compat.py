"""Compatibility checks: components that cannot work together are rejected before any work,
from what each component declares in its registration spec (cdlbench/specs.py)."""
from __future__ import annotations

from ..registry import DATASETS, METRICS, MODELS, SAMPLERS
from .schema import Component, Suite, _is_number
from .yaml_loading import SuiteError


def _axis_field(suite: Suite, key: str, i: int) -> str:
    """Field path of entry i of an axis: 'samplers[1]' for a list, 'samplers' for a single mapping."""
    return f"{key}[{i}]" if isinstance(suite.raw.get(key), list) else key


def _meta(entry, key: str, params: dict, default=None):
    """Registry metadata, either a value or a function of the component's parameters."""
    value = entry.meta.get(key, default)
    return value(params) if callable(value) else value


def dataset_facts(comp: Component) -> dict:
    """What validation can know about a dataset without loading it: image or points, labels
    (True, False or None = only known once loaded), exact score. Registry metadata
    (image=, labelled=, exact_score=) wins over class attributes."""
    entry = DATASETS.entry(comp.name)
    cls = entry.obj
    image = _meta(entry, "image", comp.params, getattr(cls, "is_image", False))
    labelled = _meta(entry, "labelled", comp.params, None)
    if labelled is None:
        classes = getattr(cls, "num_classes", None)
        if isinstance(classes, int) and not isinstance(classes, bool):
            labelled = classes > 0
        elif not image:
            labelled = False       # point clouds carry no labels
    exact = _meta(entry, "exact_score", comp.params, getattr(cls, "has_exact_score", False))
    return {"image": bool(image), "labelled": labelled, "exact_score": bool(exact)}


def has_classifier(dataset: str) -> bool:
    """The dataset can say which class a sample shows (`classify`, for class_accuracy)."""
    from ..datasets.base import Dataset
    return getattr(DATASETS.entry(dataset).obj, "classify", Dataset.classify) is not Dataset.classify


def model_is_conditional(comp: Component) -> bool:
    """A class-conditional model: registry metadata conditional= (a value or a function of the
    parameters), else a suite parameter `conditional: true` or `num_classes` > 0."""
    flag = _meta(MODELS.entry(comp.name), "conditional", comp.params, None)
    if flag is not None:
        return bool(flag)
    n = comp.params.get("num_classes")
    return bool(comp.params.get("conditional")) or (_is_number(n) and n > 0)


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
    """Samplers declare their time grid (grid="ddpm" for the 1000-step DDPM grid, "edm"/"sigma" for a
    sigma grid) and, through param_grids={param: {value: grid}}, the grid each choice of a parameter
    needs (a drift, a schedule). All must agree: a DDPM drift cannot run on a sigma grid."""
    entry = SAMPLERS.entry(comp.name)
    own = _meta(entry, "grid", comp.params)
    needs = [(None, None, own)] if isinstance(own, str) and not entry.meta.get("param_grids") else []
    for param, table in (entry.meta.get("param_grids") or {}).items():
        value = comp.params.get(param)
        if isinstance(table, dict) and value in table:
            needs.append((param, value, table[value]))
    grids = {g for _, _, g in needs}
    if len(grids) > 1:
        (p1, v1, g1), (p2, v2, g2) = needs[0], next(n for n in needs if n[2] != needs[0][2])
        table2 = entry.meta["param_grids"].get(p2, {}) if p2 else {}
        allowed = [v for v, g in table2.items() if g == g1]
        raise SuiteError(file, f"{field}.{p2}", f"{p2} {v2!r} needs the {g2} grid, but {p1} {v1!r} runs on the "
                         f"{g1} grid; {p2} values for the {g1} grid: {', '.join(map(str, allowed)) or '(none)'}")
    grid = grids.pop() if grids else own
    steps = comp.params.get("steps")
    if grid == "ddpm" and _is_number(steps) and steps > DDPM_GRID_STEPS:
        raise SuiteError(file, f"{field}.steps", f"must be <= {DDPM_GRID_STEPS} (a subset of the "
                         f"{DDPM_GRID_STEPS}-step DDPM grid), got {steps!r}")


def check_compatibility(suite: Suite) -> None:
    """Components that cannot work together are rejected before any work."""
    file = suite.path
    for key, comps in (("dataset", suite.datasets), ("model", suite.models), ("losses", suite.losses),
                       ("samplers", suite.samplers), ("metrics", suite.metrics)):
        for i, comp in enumerate(comps):
            _check_ordered(comp, file, _axis_field(suite, key, i))
    for i, comp in enumerate(suite.samplers):
        _check_grid(comp, file, _axis_field(suite, "samplers", i))
    for i, ds in enumerate(suite.datasets):
        facts = dataset_facts(ds)
        kind = "image" if facts["image"] else "point"
        for j, m in enumerate(suite.metrics):
            entry = METRICS.entry(m.name)
            if _meta(entry, "needs_image", m.params) and not facts["image"]:
                ok = [e.name for e in METRICS.entries() if not e.meta.get("needs_image")]
                raise SuiteError(file, f"{_axis_field(suite, 'metrics', j)}.name",
                                 f"metric '{m.name}' needs image data, but dataset '{ds.name}' is {kind} data; "
                                 f"metrics for {kind} data: {', '.join(ok)}")
            if _meta(entry, "needs_classifier", m.params) and not has_classifier(ds.name):
                ok = [e.name for e in DATASETS.entries() if has_classifier(e.name)]
                raise SuiteError(file, f"{_axis_field(suite, 'metrics', j)}.name",
                                 f"metric '{m.name}' needs a dataset with a classifier, but '{ds.name}' has none; "
                                 f"datasets with one: {', '.join(ok)}")
            for k, mdl in enumerate(suite.models):
                conditional = model_is_conditional(mdl)
                if _meta(entry, "needs_labels", m.params) and conditional is False:
                    raise SuiteError(file, f"{_axis_field(suite, 'metrics', j)}.name",
                                     f"metric '{m.name}' scores class-conditional samples, but model "
                                     f"'{mdl.label}' ({_axis_field(suite, 'model', k)}) is unconditional; "
                                     f"set 'conditional: true' on it")
                if _meta(entry, "needs_exact_score", m.params) and conditional:
                    raise SuiteError(file, f"{_axis_field(suite, 'metrics', j)}.name",
                                     f"metric '{m.name}' compares the unconditional score, but model "
                                     f"'{mdl.label}' ({_axis_field(suite, 'model', k)}) is class-conditional")
            if _meta(entry, "needs_exact_score", m.params) and not facts["exact_score"]:
                ok = [e.name for e in DATASETS.entries() if getattr(e.obj, "has_exact_score", False)
                      or e.meta.get("exact_score") is True]
                raise SuiteError(file, f"{_axis_field(suite, 'metrics', j)}.name",
                                 f"metric '{m.name}' needs a dataset with an exact score, but '{ds.name}' has none; "
                                 f"datasets with one: {', '.join(ok)}")
        for j, mdl in enumerate(suite.models):
            field = _axis_field(suite, "model", j)
            ok = _meta(MODELS.entry(mdl.name), "data", mdl.params, "any")
            if ok != "any" and ok != kind:
                fits = [e.name for e in MODELS.entries() if e.meta.get("data", "any") in ("any", kind)]
                raise SuiteError(file, f"{field}.name", f"model '{mdl.name}' works on {ok} data, but dataset "
                                 f"'{ds.name}' is {kind} data; models for {kind} data: {', '.join(fits)}")
            if model_is_conditional(mdl) and facts["labelled"] is False:
                flag = next((k for k in ("conditional", "num_classes") if k in mdl.explicit), "name")
                labelled = [e.name for e in DATASETS.entries() if e.meta.get("labelled") is True
                            or (isinstance(getattr(e.obj, "num_classes", None), int) and e.obj.num_classes > 0)]
                raise SuiteError(file, f"{field}.{flag}", f"model '{mdl.name}' is class-conditional, but dataset "
                                 f"'{ds.name}' has no labels; use an unconditional model or a labelled dataset "
                                 f"({', '.join(labelled) or 'none registered'})")
