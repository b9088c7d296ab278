"""Suite validation (issue 7, item 1): every bad input exits 2 before any work with one message
naming the file, the field path and what is allowed, never a traceback; a hypothesis fuzz of
random and mutated suites never gets anything but a Suite or a SuiteError from the loader."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from cdlbench.specs import MetricSpec, ModelSpec, SamplerSpec
import torch
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdlbench.cli import cli
from cdlbench.suite import Suite, SuiteError, load_suite
from cdlbench.registry import METRICS, MODELS, SAMPLERS
import fault_components
from cdlbench.run.plan import planned_work

GOOD = {**fault_components.TINY_SUITE, "seeds": [0]}


def _with(**changes) -> str:
    """GOOD with top-level keys replaced (None deletes), as YAML text."""
    data = copy.deepcopy(GOOD)
    for k, v in changes.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    return yaml.safe_dump(data, sort_keys=False)


def _invoke(tmp_path, text, name="suite.yaml", extra=()):
    path = tmp_path / name
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    result = CliRunner().invoke(cli, ["run", str(path), "--dry-run", *extra])
    out = result.output            # click >= 8.2 mixes stderr into output
    return result, out, path


# ------------------------------------------------------------------ test-only components
class _FakeImageMetric:
    """Needs images (stands in for FID)."""
    unit, higher_is_better = "", False

    def __init__(self, n_samples: int = 10):
        pass


def _cond_model(width: int = 8, conditional: bool = False, shape: tuple = (2,), num_classes=None):
    """A model that is class-conditional when `conditional: true`."""
    return torch.nn.Linear(2, 2)


def _grid_sampler(denoiser, x_T, *, generator=None, drift: str = "ddpm", schedule: str = "ddpm", steps: int = 10):
    """A sampler whose drift and schedule each need a time grid."""
    raise AssertionError("never run by validation")


@pytest.fixture
def fake_components():
    added = [(METRICS, "fake_fid", _FakeImageMetric, MetricSpec(needs=("images",))),
             (MODELS, "cond_net", _cond_model, ModelSpec(conditional=lambda p: bool(p["conditional"]))),
             (SAMPLERS, "gridded", _grid_sampler,
              SamplerSpec(param_grids={"drift": {"ddpm": "ddpm", "ddim": "ddpm", "heun": "sigma"},
                                       "schedule": {"ddpm": "ddpm", "karras": "sigma"}}))]
    for registry, name, obj, spec in added:
        registry.names()
        registry.register(name, spec=spec)(obj)
    yield
    for registry, name, _, _ in added:
        registry.unregister(name)


def _component(axis, spec):
    return _with(**{axis: spec})


# (suite text, field path named in the message, a piece of what is allowed)
BAD = {
    "not_yaml": ("name: [unclosed\nseeds: 0\n", None, "not valid YAML"),
    "not_mapping": ("- a\n- b\n", None, "must be a YAML mapping"),
    "scalar": ("just a string\n", None, "must be a YAML mapping"),
    "empty_file": ("", None, "must be a YAML mapping"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", None, "not a text (UTF-8) file"),
    "duplicate_top": (_with() + "name: again\n", None, "duplicate key 'name'"),
    "duplicate_nested": (_with(dataset=None) + "dataset: {name: dino, name: moons}\n", None, "duplicate key 'name'"),
    "unhashable_key": (_with() + "? [a, b]\n: 1\n", None, "plain scalar"),
    "non_string_key": (_with() + "1: 2\n", "1", "keys must be strings"),
    "alias_cycle": (_with(metrics=None) + "metrics: &m [*m]\n", "metrics[0]", "refers to itself"),
    "too_deep": (_with(seeds=None) + "seeds: " + "[" * 40 + "]" * 40 + "\n", "seeds" + "[0]" * 32, "nested deeper than 32"),
    "recursion": (_with(seeds=None) + "seeds: " + "[" * 5000 + "]" * 5000 + "\n", None, "recursion limit"),
    "python_tag": (_with() + "description: !!python/object/apply:os.system ['echo pwned']\n", None,
                   "not valid YAML"),
    "unknown_top_key": (_with() + "sampler: {name: ddpm}\n", "sampler", "did you mean 'samplers'"),
    "missing_key": (_with(metrics=None), "metrics", "missing"),
    "bad_name": (_with(name="../escape"), "name", "letters, digits"),
    "dot_name": (_with(name=".."), "name", "letters, digits"),
    "unknown_sampler": (_component("samplers", [{"name": "picrad"}]), "samplers[0].name", "did you mean 'picard'"),
    "code_as_name": (_component("samplers", {"name": "os.system"}), "samplers.name", "available:"),
    "unknown_param": (_component("samplers", {"name": "ddpm", "stpes": 10}), "samplers.stpes", "valid keys: name, steps"),
    "wrong_type": (_component("samplers", {"name": "ddpm", "steps": "ten"}), "samplers.steps", "an integer"),
    "bool_for_int": (_component("samplers", {"name": "ddpm", "steps": True}), "samplers.steps", "an integer"),
    "steps_zero": (_component("samplers", {"name": "ddpm", "steps": 0}), "samplers.steps", "> 0"),
    "steps_negative": (_component("samplers", [{"name": "picard", "steps": -5}]), "samplers[0].steps", "> 0"),
    "steps_over_grid": (_component("samplers", {"name": "ddpm", "steps": 2000}), "samplers.steps", "<= 1000"),
    "tolerance_zero": (_component("samplers", {"name": "picard", "tolerance": 0}), "samplers.tolerance", "> 0"),
    "tolerance_negative": (_component("samplers", {"name": "picard", "tolerance": -0.1}), "samplers.tolerance", "> 0"),
    "tolerance_nan": (_component("samplers", {"name": "picard", "tolerance": float("nan")}), "samplers.tolerance",
                      "not NaN"),
    "window_zero": (_component("samplers", {"name": "picard", "window": 0}), "samplers.window", "> 0"),
    "chunk_negative": (_component("samplers", {"name": "picard", "chunk_size": -1}), "samplers.chunk_size", "> 0"),
    "eta_probability": (_component("samplers", {"name": "ddim", "eta": 1.5}), "samplers.eta", "[0, 1]"),
    "sigma_order": (_component("samplers", {"name": "heun", "sigma_min": 10.0, "sigma_max": 1.0}),
                    "samplers.sigma_max", "sigma_min must be < sigma_max"),
    "inf_param": (_component("losses", {"name": "itd", "scale": float("inf")}), "losses.scale", "finite"),
    "cdl_weight_negative": (_component("losses", {"name": "cdl", "weight": -1.0}), "losses.weight", ">= 0"),
    "cdl_mc_points_zero": (_component("losses", {"name": "cdl", "mc_points": 0}), "losses.mc_points", "> 0"),
    "cdl_wraps_itself": (_component("losses", {"name": "cdl", "base": "cdl"}), "losses.base", "cannot wrap itself"),
    "cdl_unknown_base": (_component("losses", {"name": "cdl", "base": "itdd"}), "losses.base", "did you mean 'itd'"),
    "cdl_base_param": (_component("losses", {"name": "cdl", "base": {"name": "itd", "clip": -1}}),
                       "losses.base.clip", "> 0"),
    "n_train_zero": (_component("dataset", {"name": "dino", "n_train": 0}), "dataset.n_train", "> 0"),
    "width_zero": (_component("model", {"name": "mlp", "width": 0}), "model.width", "> 0"),
    "mmd_bandwidth": (_component("metrics", {"name": "mmd", "bandwidth": -1}), "metrics.bandwidth", "positive"),
    "ema_probability": (_with(train={"ema": 1.5}), "train.ema", "[0, 1)"),
    "lr_zero": (_with(train={"lr": 0}), "train.lr", "positive"),
    "lr_nan": (_with(train={"lr": float("nan")}), "train.lr", "positive finite"),
    "train_steps_zero": (_with(train={"steps": 0}), "train.steps", "positive integer"),
    "train_unknown": (_with(train={"step": 10}), "train.step", "valid keys: steps"),
    "identical_trains": (_with(train=[{"steps": 5}, {"steps": 5}]), "train[1]", "identical to train[0]"),
    "empty_losses": (_with(losses=[]), "losses", "empty list"),
    "empty_samplers_map": (_with(samplers={}), "samplers.name", "missing"),
    "empty_seeds": (_with(seeds=[]), "seeds", "non-empty list"),
    "negative_seed": (_with(seeds=[-1]), "seeds", "non-negative"),
    "duplicate_seeds": (_with(seeds=[1, 1]), "seeds", "duplicates"),
    "identical_entries": (_with(losses=[{"name": "ddpm"}, {"name": "ddpm"}]), "losses", "identical"),
    "bad_device": (_with(device="tpu"), "device", "auto, cpu, cuda"),
    "bad_version": (_with(version=0), "version", "positive integer"),
    "component_not_mapping": (_with(model="mlp"), "model", "mapping with 'name'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_suite_exits_2_naming_file_and_field(tmp_path, case):
    text, field, allowed = BAD[case]
    result, out, path = _invoke(tmp_path, text)
    assert result.exit_code == 2, (case, out)
    assert "Traceback" not in out and isinstance(result.exception, SystemExit)
    assert out.count("\n") == 1 and out.startswith("error: ")            # one message
    assert str(path) in out
    if field is not None:
        assert f"field '{field}'" in out, out
    assert allowed in out, out


COMPAT = {
    # an image metric on 2-D data
    "image_metric_on_points": (_component("metrics", [{"name": "mmd"}, {"name": "fake_fid"}]), "metrics[1].name",
                               "metrics for point data: class_accuracy, data_nll, energy, kl, mmd"),
    # a conditional model on unlabelled data
    "conditional_on_unlabelled": (_component("model", {"name": "cond_net", "conditional": True}), "model.conditional",
                                  "has no labels"),
    # a DDPM-grid drift on a sigma grid
    "ddpm_drift_on_sigma_grid": (_component("samplers", {"name": "gridded", "drift": "ddpm", "schedule": "karras"}),
                                 "samplers.schedule", "needs the sigma grid"),
    "sigma_drift_on_ddpm_grid": (_component("samplers", [{"name": "gridded", "drift": "heun"}]),
                                 "samplers[0].schedule", "schedule values for the sigma grid: karras"),
}


@pytest.mark.parametrize("case", sorted(COMPAT))
def test_incompatible_components_exit_2(tmp_path, fake_components, case):
    text, field, allowed = COMPAT[case]
    result, out, path = _invoke(tmp_path, text)
    assert result.exit_code == 2, out
    assert f"{path}: field '{field}'" in out and allowed in out, out


def test_compatible_variants_of_the_fake_components_pass(tmp_path, fake_components):
    ok = [_component("model", {"name": "cond_net", "conditional": False}),
          _component("samplers", {"name": "gridded", "drift": "heun", "schedule": "karras"}),
          _component("samplers", {"name": "gridded", "drift": "ddim", "schedule": "ddpm"})]
    for text in ok:
        result, out, _ = _invoke(tmp_path, text)
        assert result.exit_code == 0, out


def test_real_image_only_components_on_points_exit_2(tmp_path):
    if "unet" not in MODELS:
        pytest.skip("no unet registered")
    result, out, path = _invoke(tmp_path, _component("model", {"name": "unet"}))
    assert result.exit_code == 2 and f"{path}: field 'model.name'" in out and "models for point data" in out


def test_yaml_python_tag_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    text = _with() + f"description: !!python/object/apply:os.system ['touch {marker}']\n"
    result, out, _ = _invoke(tmp_path, text)
    assert result.exit_code == 2 and not marker.exists()


def test_missing_file_and_bad_seeds_option(tmp_path):
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "nope.yaml"), "--dry-run"])
    assert result.exit_code == 2 and "nope.yaml" in result.output and "no such suite file" in result.output
    assert "suites here: " in result.output or not Path("suites").is_dir()
    result, out, _ = _invoke(tmp_path, _with(), extra=("--seeds", "a,b"))
    assert result.exit_code == 2 and "--seeds" in out
    for bad in ("-1", "", "0,0", ","):        # the command line is blamed, not the suite file
        result, out, path = _invoke(tmp_path, _with(), extra=("--seeds", bad))
        assert result.exit_code == 2 and out.startswith("error: --seeds") and str(path) not in out, (bad, out)


def test_good_suite_passes_and_several_train_blocks_get_distinct_cell_names(tmp_path):
    result, out, _ = _invoke(tmp_path, _with())
    assert result.exit_code == 0, out
    path = tmp_path / "two.yaml"
    path.write_text(_with(train=[{"steps": 5, "lr": 1e-3}, {"steps": 5, "lr": 1e6}]))
    names = [c.name for c in load_suite(path).cells()]
    assert len(names) == len(set(names)) == 8      # 2 trains x 2 losses x 2 samplers
    assert any("/train[lr=1000000.0]/" in n for n in names)


# ------------------------------------------------------------------ fuzz
_LEAF = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
         | st.text(max_size=6) | st.sampled_from(["ddpm", "picard", "mmd", "dino", "mlp", "cdl", "itd", "name"]))
_KEYS = st.sampled_from(sorted(set(GOOD) | {"steps", "name", "tolerance", "window", "base", "bandwidth", "lr", "ema"})) \
    | st.text(max_size=6)
_VALUE = st.recursive(_LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(_KEYS, c, max_size=4), max_leaves=12)


def _paths(data, prefix=()):
    """Every (path) into nested dicts/lists, root excluded."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
    for k, v in items:
        yield prefix + (k,)
        yield from _paths(v, prefix + (k,))


def _mutate(data, draw):
    paths = list(_paths(data))
    path = draw(st.sampled_from(paths))
    parent = data
    for k in path[:-1]:
        parent = parent[k]
    op = draw(st.sampled_from(["delete", "replace", "number", "wrap", "add"]))
    key = path[-1]
    if op == "delete":
        parent.pop(key)
    elif op == "replace":
        parent[key] = draw(_VALUE)
    elif op == "number":
        parent[key] = draw(st.sampled_from([0, -1, 1, 10**9, 0.5, -0.5, 1.5, 1e-12, float("nan"), float("inf")]))
    elif op == "wrap":
        parent[key] = [parent[key]] if draw(st.booleans()) else []
    elif isinstance(parent[key], dict):
        parent[key][draw(_KEYS)] = draw(_VALUE)


@st.composite
def mutated_suites(draw):
    data = copy.deepcopy(GOOD)
    for _ in range(draw(st.integers(1, 3))):
        if list(_paths(data)):
            _mutate(data, draw)
    return data


def _load_text(tmp_path, text) -> Suite | None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    try:
        suite = load_suite(path)
    except SuiteError as exc:
        assert str(path) in str(exc) and exc.message
        return None
    # what the runner does with a valid suite before any work must not fail either
    yaml.safe_dump(suite.resolved())
    planned_work(suite)
    assert len({c.name for c in suite.cells()}) == len(suite.cells())
    return suite


FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@FUZZ
@given(data=mutated_suites())
def test_fuzz_mutated_suites_give_suite_or_suite_error(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("fuzz")
    _load_text(tmp, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


@FUZZ
@given(data=_VALUE)
def test_fuzz_random_documents_give_suite_or_suite_error(tmp_path_factory, data):
    _load_text(tmp_path_factory.mktemp("fuzz"), yaml.safe_dump(data, allow_unicode=True))


@FUZZ
@given(text=st.text(max_size=200) | st.binary(max_size=100))
def test_fuzz_random_text_and_bytes_give_suite_or_suite_error(tmp_path_factory, text):
    _load_text(tmp_path_factory.mktemp("fuzz"), text)


def test_fuzz_mutations_hit_both_outcomes(tmp_path):
    """The mutation strategy is not vacuous: it yields valid suites and invalid ones."""
    outcomes = set()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(data=mutated_suites())
    def probe(data):
        outcomes.add(_load_text(tmp_path, yaml.safe_dump(data, sort_keys=False)) is None)

    probe()
    assert outcomes == {True, False}


# ------------------------------------------------------------------ safe loading (issue 7, item 4)
def test_component_names_are_never_imported(tmp_path):
    import sys

    for name in ("this", "antigravity", "turtle:done"):
        assert name not in sys.modules
        result, out, path = _invoke(tmp_path, _component("samplers", {"name": name}))
        assert result.exit_code == 2 and f"{path}: field 'samplers.name'" in out
        assert name.split(":")[0] not in sys.modules


def test_package_uses_only_safe_loaders():
    """Static guard: checkpoints load with weights_only=True, YAML with a safe loader, no pickle,
    no eval/exec, no imports by computed name (plugins come only through entry points)."""
    import re
    from pathlib import Path

    import cdlbench

    bad = []
    for path in Path(cdlbench.__file__).parent.rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                bad.append(f"{path.name}: {m.group(0)}")
        for m in re.finditer(r"yaml\.load\(([^)]*)\)", text):
            if "_StrictLoader" not in m.group(1) and "SafeLoader" not in m.group(1):
                bad.append(f"{path.name}: {m.group(0)}")
        for pattern in (r"\bpickle\.loads?\(", r"allow_pickle\s*=\s*True", r"(?<![.\w])eval\(", r"(?<![.\w])exec\(",
                        r"import_module\(", r"yaml\.unsafe_load", r"yaml\.full_load"):
            bad += [f"{path.name}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert not bad, bad


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "suites").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_suite_validates_and_states_its_runtime(path):
    from cdlbench.suite import load_suite, load_yaml

    raw = load_yaml(path)
    assert {"cpu", "gpu"} <= set(raw["expected_runtime"]) and raw.get("description"), path
    suite = load_suite(path)
    assert suite.cells()


def test_training_keys_of_shipped_suites_do_not_move():
    """Cache keys and derived seeds (training, initialisation, data) of the shipped suites are
    pinned: a new parameter must declare its neutral value (registry `neutral=`) so that suites
    which do not use it keep their checkpoints and reproduce their committed numbers."""
    import json

    from cdlbench.suite import load_suite

    root = Path(__file__).resolve().parents[1]
    golden = json.loads((root / "golden" / "training_keys.json").read_text())
    for path, keys in golden.items():
        suite = load_suite(root.parent / path)
        assert sorted({c.training_key() for c in suite.cells()}) == keys, \
            f"{path}: training keys moved (a new component parameter without a neutral value?)"
