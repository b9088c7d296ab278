"""Direction-aware comparisons with reference numbers, and "not comparable" where a setting that
defines the number differs (an MMD bandwidth, the accelerator of a wall-clock time)."""
from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from cdlbench import report
from cdlbench.cli import cli
from cdlbench.report.baselines import (Baseline, BaselineError, compare_metric, crossed_settings, load_baselines,
                                       verdict)

from .synthetic import PAPER

STATS = {"mean": 0.002, "n": 3, "n_runs": 3, "higher_is_better": False}


def _unset(v) -> bool:
    """None, or NaN (how the long table's json writes a missing value)."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def test_verdict_is_direction_aware():
    assert verdict(1.0, 2.0, higher_is_better=False) == (-1.0, "better")
    assert verdict(1.0, 2.0, higher_is_better=True) == (-1.0, "worse")
    assert verdict(3.0, 2.0, higher_is_better=True) == (1.0, "better")
    assert verdict(None, 27.0, False)[1] == "worse (ours never reached)"
    assert verdict(30.0, None, False)[1] == "better (reference never reached)"
    assert verdict(None, None, False)[1] == "neither reached"


def test_compare_metric_matches_and_lists_crossed_settings():
    b = Baseline("x", "exp", "reference_code", "src", {"dataset": "dino", "loss": "cdl", "sampler": "picard"},
                 {"p_sampler_steps": 1000, "p_metric_n_samples": 2000}, {"mmd": 0.00123, "iterations": 36})
    row = {"dataset": "dino[n_train=5000]", "loss": "cdl", "sampler": "picard[steps=100]",
           "p_sampler_steps": 100, "p_metric_n_samples": 2000.0}
    c = compare_metric([b], row, "mmd", STATS)
    assert c.reference == 0.00123 and c.delta == pytest.approx(0.002 - 0.00123) and c.verdict == "worse"
    assert c.crossed == ["sampler_steps: ours 100, reference 1000"] and c.blocking == []
    assert compare_metric([b], {**row, "loss": "ddpm"}, "mmd", STATS) is None
    assert crossed_settings(b, {**row, "p_sampler_steps": 1000}) == []


def test_a_fine_tunes_training_length_counts_its_pretraining():
    b = Baseline("x", "exp", "reference_code", "src", {"loss": "cdl"}, {"p_train_steps": 782000}, {"mmd": 0.00123})
    init = json.dumps({"loss": {"name": "ddpm"}, "train": {"steps": 100000}, "resume_optimizer": False})
    row = {"loss": "cdl", "p_train_steps": 5000, "p_train_init_from": init}
    assert crossed_settings(b, row) == ["train_steps: ours 105000, reference 782000"]
    assert crossed_settings(b, {"loss": "cdl", "p_train_steps": 5000}) == ["train_steps: ours 5000, reference 782000"]


def test_another_bandwidth_is_not_comparable():
    b = Baseline("seq", "exp", "reference_code", "src", {"sampler": "ddpm"},
                 {"p_sampler_steps": 1000, "p_metric_bandwidth": "median"}, {"mmd": 0.00048},
                 comparable_only_if={"mmd": ("p_metric_bandwidth",)})
    row = {"sampler": "ddpm", "p_sampler_steps": 1000, "p_metric_bandwidth": 0.03}
    c = compare_metric([b], row, "mmd", {**STATS, "mean": 0.00563})
    assert c.verdict == "not comparable" and c.delta is None
    assert c.blocking == ["p_metric_bandwidth"] and c.blocking_text == ["metric_bandwidth: ours 0.03, reference median"]
    same = compare_metric([b], {**row, "p_metric_bandwidth": "median"}, "mmd", {**STATS, "mean": 0.00563})
    assert same.verdict == "worse" and same.delta == pytest.approx(0.00563 - 0.00048)
    # another crossed setting (steps) still gets a verdict
    steps = compare_metric([b], {**row, "p_metric_bandwidth": "median", "p_sampler_steps": 100}, "mmd", STATS)
    assert steps.verdict == "worse" and steps.crossed == ["sampler_steps: ours 100, reference 1000"]


def test_wall_clock_on_another_accelerator_is_not_comparable_by_default():
    """No comparable_only_if in the entry: the wall_clock figure declares the accelerator."""
    b = Baseline("gpu", "exp", "reference_code", "src", {}, {"p_env_accelerator": "gpu"},
                 {"wall_clock": 1.368, "iterations": 36})
    row = {"p_env_accelerator": "cpu"}
    wall = compare_metric([b], row, "wall_clock", {**STATS, "mean": 70.0})
    assert wall.verdict == "not comparable" and wall.delta is None and wall.blocking == ["p_env_accelerator"]
    iters = compare_metric([b], row, "iterations", {**STATS, "mean": 32.7})     # passes: any accelerator
    assert iters.verdict == "better" and iters.delta == pytest.approx(32.7 - 36)
    assert compare_metric([b], {"p_env_accelerator": "gpu"}, "wall_clock", {**STATS, "mean": 1.0}).verdict == "better"


def test_an_entry_prefers_the_comparable_reference():
    loose = Baseline("median", "e", "paper", "s", {}, {"p_metric_bandwidth": "median"}, {"mmd": 1.0},
                     comparable_only_if={"mmd": ("p_metric_bandwidth",)})
    tight = Baseline("bw", "e", "paper", "s", {}, {"p_metric_bandwidth": 0.03, "p_sampler_steps": 10}, {"mmd": 2.0},
                     comparable_only_if={"mmd": ("p_metric_bandwidth",)})
    c = compare_metric([loose, tight], {"p_metric_bandwidth": 0.03, "p_sampler_steps": 1000}, "mmd", STATS)
    assert c.baseline.id == "bw" and c.verdict == "better"


def test_baselines_file_comparable_only_if(tmp_path):
    f = tmp_path / "b.yaml"
    f.write_text("comparable_only_if: {mmd: [p_metric_bandwidth]}\n"
                 "sources: {s: src}\n"
                 "entries:\n"
                 "  - {id: a, provenance: paper, source: s, settings: {p_metric_bandwidth: 0.1}, values: {mmd: 1, nfe: 5}}\n"
                 "  - {id: b, provenance: paper, source: s, settings: {p_metric_bandwidth: 0.1, p_env_accelerator: gpu},\n"
                 "     values: {mmd: 1, nfe: 5}, comparable_only_if: [p_env_accelerator]}\n"
                 "  - {id: c, provenance: paper, source: s, settings: {p_metric_bandwidth: 0.1},\n"
                 "     values: {mmd: 1}, comparable_only_if: {mmd: []}}\n")
    a, b, c = load_baselines(f)[0]
    assert a.comparable_only_if == {"mmd": ("p_metric_bandwidth",)}                         # the file's default
    assert b.comparable_only_if == {"mmd": ("p_env_accelerator",), "nfe": ("p_env_accelerator",)}   # list: all
    assert c.comparable_only_if == {"mmd": ()}                                               # explicitly none
    row = {"p_metric_bandwidth": 0.03, "p_env_accelerator": "cpu"}
    assert compare_metric([a], row, "mmd", STATS).verdict == "not comparable"
    assert compare_metric([c], row, "mmd", STATS).verdict == "better"            # 0.002 < 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: {s: src}\nentries:\n  - {provenance: paper, source: s, values: {mmd: 1},\n"
                   "     comparable_only_if: {mmd: [p_metric_bandwidht]}}\n")
    with pytest.raises(BaselineError, match="p_metric_bandwidht not under 'settings'"):
        load_baselines(bad)


def test_paper_baselines_hold_every_spec_number():
    entries, sources = load_baselines(PAPER)
    assert {e.provenance for e in entries} == {"paper", "reference_code", "third_party"}
    numbers = sorted(v for e in entries for v in e.values.values() if v is not None)
    for expected in (36, 13983, 1.368, 0.00123, 27, 37, 14397, 1.871, 0.00311, 21, 4565, 0.0075, 22, 6459,
                     0.0090, 2.0e-4, 4.8e-4, 7.35, 7.19, 1.99, 1.81, 2.00, 2.29, 1.79, 1.97, 1.96, 2.39):
        assert any(math.isclose(expected, n, rel_tol=1e-9) for n in numbers), expected
    fid = [e for e in entries if "fid" in e.values]
    assert all(e.provenance in ("third_party", "paper") for e in fid)
    assert all(e.only_if("fid") == ("p_metric_extractor",) for e in fid)
    ddpm = next(e for e in entries if e.id == "dino-picard-ddpm1000-ddpm")
    assert "mmd_iters_to_threshold" in ddpm.censored
    assert ddpm.only_if("mmd") == ("p_metric_bandwidth",) and "p_env_accelerator" in ddpm.only_if("wall_clock")
    seq = next(e for e in entries if e.id == "dino-ddpm1000-ddpm")
    assert seq.only_if("mmd") == ("p_metric_bandwidth",) and seq.settings["p_metric_bandwidth"] == "median"


def test_report_with_paper_baseline(run_dir):
    text = report.render([run_dir], "markdown", baseline=PAPER)
    assert "Compared with the reference numbers" in text
    assert "0.00123 (reference code)" in text
    assert "train_steps: ours 20000, reference 782000" in text
    assert "env_accelerator: ours cpu, reference gpu" in text       # wall-clock crosses devices
    wall = [line for line in text.splitlines() if line.startswith("| cdl ") and "wall-clock" in line]
    assert len(wall) == 1 and "not comparable: env_accelerator differs" in wall[0]
    assert "%)" not in wall[0] and "| -  " in wall[0]                # no (+1074%)-style difference
    table = json.loads(report.render([run_dir], "json", baseline=PAPER))
    cdl_mmd = next(r for r in table if r["loss"] == "cdl" and r["sampler"] == "picard" and r["metric"] == "mmd")
    assert cdl_mmd["reference"] == 0.00123 and cdl_mmd["verdict"] == "better"      # lower MMD
    assert cdl_mmd["delta"] == pytest.approx(0.0012 - 0.00123) and _unset(cdl_mmd["not_comparable_because"])
    cdl_wall = next(r for r in table if r["loss"] == "cdl" and r["sampler"] == "picard" and r["metric"] == "wall_clock")
    assert cdl_wall["verdict"] == "not comparable" and _unset(cdl_wall["delta"])
    assert cdl_wall["not_comparable_because"] == "env_accelerator: ours cpu, reference gpu"
    # the sequential reference used the median-heuristic bandwidth, ours 0.03: not comparable
    seq = next(r for r in table if r["loss"] == "ddpm" and r["sampler"] == "ddpm" and r["metric"] == "mmd")
    assert seq["verdict"] == "not comparable" and seq["reference"] == 0.00048
    assert "metric_bandwidth: ours 0.03, reference median" in seq["not_comparable_because"]


def test_cli_bad_baseline_is_usage_error(run_dir, tmp_path):
    bad = tmp_path / "b.yaml"
    bad.write_text("entries:\n  - {provenance: blog, source: x, values: {mmd: 1}}\n")
    res = CliRunner().invoke(cli, ["report", str(run_dir), "--baseline", str(bad)])
    assert res.exit_code == 2 and "provenance" in res.output


def test_paper_defaults_are_the_registered_neutral_values():
    """baselines/paper.yaml's `defaults` (what a run that records no such column used) cannot drift
    from the components' declared neutral values."""
    from cdlbench.registry import LOSSES, METRICS, load_components
    from cdlbench.report.baselines import load_baselines
    from cdlbench.suite.schema import TRAIN_DEFAULTS, TRAIN_NEUTRAL

    load_components()
    entries, _ = load_baselines("baselines/paper.yaml")
    defaults = entries[0].defaults
    neutral = {**{f"p_train_{k}": v for k, v in TRAIN_NEUTRAL.items()},
               "p_train_ema": TRAIN_DEFAULTS["ema"],
               "p_loss_reduction": LOSSES.entry("ddpm").neutral["reduction"],
               "p_loss_shared_points": LOSSES.entry("cdl").neutral["shared_points"],
               **{f"p_metric_{k}": v for k, v in METRICS.entry("mmd").neutral.items()}}
    for key, value in neutral.items():
        assert defaults[key] == value, key


def test_dino_comparison_lists_ema_and_every_reference_setting():
    """A row with cdlbench's defaults (EMA 0.999, residual mlp, random batches, ...) against the
    reference code's Dino entry: every declared difference is listed, EMA included; a row with the
    reference settings lists none of them."""
    from cdlbench.report.baselines import compare_metric, load_baselines

    entries, _ = load_baselines("baselines/paper.yaml")
    ours = {"dataset": "dino", "model": "mlp", "loss": "ddpm", "sampler": "picard[window=1000]",
            "p_sampler_drift": "ddpm", "p_sampler_steps": 1000, "p_sampler_tolerance": 0.1, "p_metric_n_samples": 1000,
            "p_metric_bandwidth": 0.03, "p_train_steps": 20000, "p_train_batch_size": 128, "p_model_width": 128,
            "p_model_blocks": 2, "p_metric_threshold": 0.002, "p_env_accelerator": "cpu", "p_train_ema": 0.999}
    stats = {"mean": 0.005, "n": 3, "n_runs": 3, "higher_is_better": False}
    c = compare_metric(entries, ours, "mmd", stats)
    crossed = {t.split(":")[0] for t in c.crossed}
    assert {"train_ema", "model", "train_batches", "loss_reduction", "metric_reference", "metric_reference_size",
            "metric_threshold_rule", "model_blocks", "train_steps", "env_accelerator"} <= crossed
    assert "train_ema: ours 0.999, reference none" in c.crossed
    reference_like = {**ours, "model": "mlp-discrete", "p_model_blocks": 3, "p_train_ema": None,
                      "p_train_batches": "sequential", "p_loss_reduction": "sum", "p_metric_reference": "fresh",
                      "p_metric_reference_size": 8000, "p_metric_threshold_rule": "<="}
    left = {t.split(":")[0] for t in compare_metric(entries, reference_like, "mmd", stats).crossed}
    assert left == {"train_steps", "metric_n_samples", "env_accelerator"}
