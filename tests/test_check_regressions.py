"""benchmarks/check_regressions.py: counts compare exactly, floats within FLOAT_RTOL, so CI passes
on any x86 CPU type and still fails on a real change."""
from __future__ import annotations

import json

import pytest

from benchmarks import check_regressions as cr

MMD = "bench_tracking.TinyDinoPicard.track_final_mmd"
ITERS = "bench_tracking.TinyDinoPicard.track_picard_iterations"
COMMITTED = {MMD: [0.028188138758277692, 0.024133526502087124], ITERS: [20, 23]}


def _asv_file(path, values: dict, commit: str):
    blob = {"commit_hash": commit, "date": 1, "result_columns": ["result", "params"],
            "results": {name: [v, [["'ddpm'", "'cdl'"]]] for name, v in values.items()}}
    path.write_text(json.dumps(blob))
    return path


def _compare(tmp_path, new: dict) -> int:
    base = _asv_file(tmp_path / "base.json", COMMITTED, "a" * 40)
    head = _asv_file(tmp_path / "head.json", new, "b" * 40)
    return cr.compare(head, base)


def test_intel_value_of_the_committed_amd_mmd_passes(tmp_path, capsys):
    # the value an Intel Xeon gave for the committed AMD EPYC one: 9.2e-8 relative
    assert _compare(tmp_path, {MMD: [0.028188141338, 0.024133526502087124], ITERS: [20, 23]}) == 0
    assert "deterministic values unchanged" in capsys.readouterr().out


@pytest.mark.parametrize("new", [
    # Picard tolerance 0.09 instead of 0.1 (measured): the CDL model's MMD moves by 1.5e-5
    {MMD: [0.02818815796158887, 0.024133163297909876], ITERS: [20, 23]},
    {MMD: [0.028188138758277692, 0.024133526502087124], ITERS: [21, 23]},               # one pass more
    {MMD: [0.028188138758277692, float("nan")], ITERS: [20, 23]},                       # a value lost
])
def test_a_real_change_fails(tmp_path, capsys, new):
    assert _compare(tmp_path, new) == 1
    assert "CHANGED" in capsys.readouterr().out


def test_counts_are_exact_and_floats_relative():
    assert cr.same_value(20, 20) and not cr.same_value(20, 21)
    assert cr.same_value(1.0, 1.0 + 1.5e-6) and not cr.same_value(1.0, 1.0 + 1.5e-5)
    assert cr.same_value(None, float("nan")) and not cr.same_value(None, 0.5)
    assert cr.FLOAT_RTOL == pytest.approx(2e-6)
