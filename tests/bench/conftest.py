"""pytest-benchmark micro-benchmarks of the hot functions, kept out of the default test run.

Run them with
    python -m pytest tests/bench -m bench --benchmark-enable
(add e.g. --benchmark-autosave / --benchmark-compare to keep and compare results)."""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """Deselect everything under tests/bench unless the run selects the `bench` marker."""
    if "bench" in (config.getoption("markexpr") or ""):
        return
    keep, drop = [], []
    for item in items:
        (drop if HERE in Path(str(item.fspath)).resolve().parents else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
