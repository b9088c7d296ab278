"""scripts/cuda_digits_check.py: the suite it derives validates and its table groups records."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from cdlbench.suite import parse_suite

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "cuda_digits_check.py"
spec = importlib.util.spec_from_file_location("cuda_digits_check", SCRIPT)
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)


def test_derived_suite_is_the_digits_suite_for_one_seed_on_the_device():
    raw = check.derived_suite("cuda", quick=False)
    suite = parse_suite(raw, file="derived")
    assert suite.seeds == [0] and suite.device == "cuda" and raw["train"]["steps"] == 1500
    assert {s.name for s in suite.samplers} == {"picard", "heun", "ddpm"}
    quick = check.derived_suite("cpu", quick=True)
    assert quick["train"]["steps"] == 100 and all(m["n_samples"] == 200 for m in quick["metrics"])


def test_wall_clock_table_one_row_per_loss_and_sampler():
    recs = [{"loss": "ddpm", "sampler": s, "env_device": "NVIDIA H200", "metric": m, "value": v}
            for s, m, v in [("picard", "wall_clock", 2.0), ("picard", "iterations", 24), ("ddpm", "wall_clock", 4.0),
                            ("ddpm", "nfe", 100), ("picard", "converged", 1.0)]]
    rows = {r["sampler"]: r for r in check.wall_clock_table(recs)}
    assert rows["picard"]["wall_clock"] == 2.0 and rows["picard"]["iterations"] == 24
    assert rows["ddpm"]["nfe"] == 100 and "converged" not in rows["picard"]
