"""The report reads what components declare (cdlbench/figures.py, their specs) and never tests a
component's name: no string in cdlbench/report/ is a registered component name."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pandas as pd

from cdlbench.registry import REGISTRIES
from cdlbench.report import sweeps

REPORT = Path(__file__).resolve().parents[2] / "cdlbench" / "report"
NAME_TESTS = re.compile(r"""(startswith|endswith)\(\s*["'](picard|ddpm|ddim|heun|euler|mmd|fid|kid)""")


def _constants(node):
    """String constants in a node, through tuples, lists, sets and dicts (keys and values)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.lineno, node.value
    elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        for elt in node.elts:
            yield from _constants(elt)
    elif isinstance(node, ast.Dict):
        for part in list(node.keys) + list(node.values):
            if part is not None:
                yield from _constants(part)


def _strings(path: Path):
    """Strings a module tests names against: operands of comparisons (==, in, ...), arguments of
    startswith/endswith, module- and class-level literals (name lists, name -> label tables) and
    parameter defaults."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                yield from _constants(operand)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("startswith", "endswith", "isin", "get"):
            for arg in node.args:
                yield from _constants(arg)
        elif isinstance(node, ast.arguments):
            for default in node.defaults + [d for d in node.kw_defaults if d is not None]:
                yield from _constants(default)
        elif isinstance(node, (ast.Module, ast.ClassDef)):
            for stmt in node.body:
                if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
                    yield from _constants(stmt.value)


def test_no_component_name_in_report_code():
    names = {n for reg in REGISTRIES.values() for n in reg.names()}
    assert {"picard", "ddpm", "mmd", "fid"} <= names
    files = sorted(REPORT.rglob("*.py"))
    assert len(files) >= 12
    found = []
    for f in files:
        text = f.read_text()
        found += [f"{f.name}: {m.group(0)}" for m in NAME_TESTS.finditer(text)]
        for line, s in _strings(f):
            if s in names or any(s.startswith(n + "[") for n in names):
                found.append(f"{f.name}:{line}: {s!r}")
    assert found == []


def test_no_name_lists_left():
    from cdlbench.report import plots, tables

    for module, gone in ((tables, ("COLUMNS", "HIDDEN")), (sweeps, ("NOT_QUALITY", "PARALLEL")), (plots, ("QUALITY",))):
        assert not any(hasattr(module, g) for g in gone), module.__name__


def test_sweeps_read_the_parallel_flag_and_quality_declarations():
    rows = []
    for sampler, steps, nfe in (("heun[steps=5]", 5, 9), ("heun[steps=10]", 10, 19), ("picard[steps=10]", 10, 30)):
        common = {"cell": f"d/m/l/{sampler}/seed=0", "dataset": "d", "model": "m", "loss": "l", "sampler": sampler,
                  "seed": 0, "p_sampler_steps": steps}
        rows += [{**common, "metric": "nfe", "value": nfe}, {**common, "metric": "mmd", "value": 0.1 / steps},
                 {**common, "metric": "score_error_id", "value": 1.0}, {**common, "metric": "wall_clock", "value": 1}]
    df = pd.DataFrame(rows)
    assert sweeps.quality_metrics(df) == ["mmd"]              # score_error is declared quality=False
    table = sweeps.nfe_table(df, "mmd")
    assert list(table["NFE"]) == [9, 19]                      # the parallel sampler (SamplerSpec) is left out
    assert list(table["l"]) == ["0.0200 ± 0.0000 (n=1)", "0.0100 ± 0.0000 (n=1)"]   # one format per column
