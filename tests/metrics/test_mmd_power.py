"""MMD with power: several bandwidths in one metric, each its own record; a
permutation p-value; blocked kernel sums equal to the unblocked ones; the neutral defaults leave
the one-bandwidth metric and its records as they were."""
from __future__ import annotations

import math

import pytest
import torch

import cdlbench.metrics.mmd as mmd_module
from cdlbench import METRICS
from cdlbench.metrics.base import MetricValue
from cdlbench.metrics.mmd import (MAX_BLOCK_ELEMENTS, block_rows, mmd2_permutation_pvalue, mmd2_unbiased,
                                  permutation_splits, pooled_mmd2)
from cdlbench.run.eval_job import _value_records
from cdlbench.suite.schema import Component


def _points(n, seed, shift=0.0, d=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, d), generator=g, dtype=torch.float64) * 0.3 + shift


def _metric(**params):
    return METRICS.build("mmd", params, device=torch.device("cpu"), cache_dir=None, reference_key="x")


def test_blocked_kernel_sums_equal_the_unblocked_value():
    # float64 sums of ~2e6 kernel entries in another order: each partial sum is exact to ~1e-16
    # relative, so the two MMD^2 differ by far less than 1e-10 of the kernel's scale k(0)
    x, y = _points(1500, 0), _points(1300, 1, 0.05)
    for bw in (0.01, 0.1):
        whole = mmd2_unbiased(x, y, bw)                     # one block: 1500 x 1500 < MAX_BLOCK_ELEMENTS
        small = mmd2_unbiased(x, y, bw, block=37)
        assert abs(whole - small) <= 1e-10 / math.sqrt(2 * math.pi * bw), (bw, whole, small)


def test_kernel_blocks_stay_bounded_at_8000_points(monkeypatch):
    seen = []
    real = mmd_module._sq_dists

    def spy(a, b):
        seen.append(a.shape[0] * b.shape[0])
        return real(a, b)
    monkeypatch.setattr(mmd_module, "_sq_dists", spy)
    monkeypatch.setattr(mmd_module, "MAX_BLOCK_ELEMENTS", 1 << 16)     # small cap, same code path
    x, y = _points(300, 2), _points(280, 3)
    blocked = mmd2_unbiased(x, y, 0.05)
    assert max(seen) <= 1 << 16 and len(seen) >= 6
    assert abs(blocked - mmd2_unbiased(x, y, 0.05, block=10 ** 6)) < 1e-12
    assert block_rows(8000) * 8000 <= MAX_BLOCK_ELEMENTS         # 8000 x 8000: 32 MiB blocks, not 512 MiB


def test_pooled_statistic_of_the_observed_split_is_mmd2_unbiased():
    x, y = _points(60, 4), _points(45, 5, 0.2)
    observed = torch.cat([torch.ones(60), torch.zeros(45)]).double().unsqueeze(1)
    swapped = torch.cat([torch.zeros(45), torch.ones(60)]).double().unsqueeze(1)
    pooled = pooled_mmd2(torch.cat([x, y]), observed, [0.02, 0.3], block=7)
    for j, bw in enumerate((0.02, 0.3)):
        assert abs(pooled[j, 0].item() - mmd2_unbiased(x, y, bw)) < 1e-12
    assert abs(pooled_mmd2(torch.cat([y, x]), swapped, [0.3])[0, 0].item() - mmd2_unbiased(x, y, 0.3)) < 1e-12


def test_permutation_splits_relabel_uniformly():
    a = permutation_splits(3, 2, 20000, torch.Generator().manual_seed(0))
    assert a.shape == (5, 20000) and bool((a.sum(0) == 3).all())
    # each point lands in the first sample with probability 3/5; sd of the mean 0.0035
    assert (a.mean(1) - 0.6).abs().max().item() < 0.02


def test_pvalue_is_small_for_a_shift_and_level_keeping_under_the_null():
    g = torch.Generator().manual_seed(11)
    x, y = _points(80, 6), _points(80, 7, 0.3)
    bws = [0.05, 0.5]
    p = mmd2_permutation_pvalue(x, y, [mmd2_unbiased(x, y, b) for b in bws], bws, 99, g)
    assert p == [0.01, 0.01]                                  # 1 / (1 + 99): no relabelling beats it
    # under H0 the p-value is super-uniform: P(p <= 0.1) <= 0.1; 60 replicates, expect <= 6;
    # P(Binomial(60, 0.1) >= 14) < 0.001
    small = 0
    for rep in range(60):
        x0, y0 = _points(30, 100 + rep), _points(30, 500 + rep)
        small += mmd2_permutation_pvalue(x0, y0, [mmd2_unbiased(x0, y0, 0.1)], [0.1], 49, g)[0] <= 0.1
    assert small < 14, small


def test_pvalue_comes_from_the_given_generator():
    x, y = _points(40, 8), _points(40, 9, 0.05)
    m = _metric(bandwidth=0.1, permutations=30)
    a = m(x, y, generator=torch.Generator().manual_seed(3))
    b = m(x, y, generator=torch.Generator().manual_seed(3))
    assert a == b and a[1].part == "pvalue"
    with pytest.raises(ValueError, match="generator"):
        m(x, y)


def test_several_bandwidths_one_record_each_never_pooled():
    x, y = _points(200, 10), _points(200, 11, 0.1)
    comp = Component("metric", "mmd", {"bandwidth": "median", "n_samples": 200, "threshold": None,
                                        "reference": "train", "reference_size": None, "threshold_rule": "<",
                                        "bandwidths": [0.01, 0.1, "median"], "permutations": 20}, ("bandwidths",), "mmd")
    metric = _metric(**comp.params)
    values = metric(x, y, generator=torch.Generator().manual_seed(0))
    assert all(isinstance(v, MetricValue) for v in values) and len(values) == 6
    records = _value_records("mmd", values, METRICS.entry("mmd").spec, comp)
    keys = {(r["metric"], r["p_metric_bandwidth"]) for r in records}
    assert len(keys) == 6                                   # (mmd | mmd_pvalue) x 3 bandwidths, all distinct
    for r in records:
        if r["metric"] == "mmd" and r["p_metric_bandwidth"] != "median":    # equal to a one-bandwidth metric
            assert r["value"] == _metric(bandwidth=r["p_metric_bandwidth"], n_samples=200)(x, y)
        if r["metric"] == "mmd_pvalue":
            assert r["higher_is_better"] is True and r["unit"] == "" and 0 < r["value"] <= 1
    assert metric.curve_params == {"bandwidth": 0.01}
    assert metric.per_iteration(x, y) == mmd2_unbiased(x, y, 0.01)


def test_neutral_defaults_leave_records_and_keys_as_they_were():
    neutral = METRICS.entry("mmd").neutral
    assert neutral["bandwidths"] is None and neutral["permutations"] == 0
    params = {"bandwidth": 0.03, "n_samples": 1000, "threshold": 0.002, "reference": "train", "reference_size": None,
              "threshold_rule": "<", "bandwidths": None, "permutations": 0}
    comp = Component("metric", "mmd", params, ("bandwidth", "n_samples", "threshold"), "mmd")
    x, y = _points(100, 12), _points(100, 13)
    value = _metric(**params)(x, y, generator=torch.Generator().manual_seed(0))
    assert isinstance(value, float) and value == mmd2_unbiased(x, y, 0.03)
    (record,) = _value_records("mmd", value, METRICS.entry("mmd").spec, comp)
    # the columns of the committed dino-finetune / dino-length records, nothing more
    assert {k for k in record if k.startswith("p_metric_")} == {"p_metric_bandwidth", "p_metric_n_samples",
                                                                 "p_metric_threshold"}


@pytest.mark.parametrize("bad", [[], [0.1, 0.1], [0.1, -1], "0.1"])
def test_bad_bandwidths_are_refused(bad):
    from cdlbench.metrics.mmd import _bandwidths_ok
    assert _bandwidths_ok(bad)


def test_committed_mmd_values_are_reproduced_bit_for_bit_from_saved_samples():
    """The blocked, multi-bandwidth code computes the committed runs' MMD exactly (same samples,
    same reference points, same float64 operations)."""
    from pathlib import Path

    import numpy as np

    from cdlbench.run.coordinator import samples_file
    from cdlbench.run.data import prepare, reference_points
    from cdlbench.run.rundir import RunDir
    from cdlbench.suite.schema import parse_suite

    run = RunDir(Path(__file__).parents[2] / "results" / "reference")
    suite = parse_suite(dict(run.existing_config()), file=str(run.config))
    rows = [r for r in run.load_records() if r["metric"] == "mmd"][:2]
    assert rows
    for row in rows:
        samples = torch.from_numpy(np.load(samples_file(run.path, row["cell"]))["samples"])
        prep = prepare(suite.datasets[0], row["seed"], torch.device("cpu"))
        ref = reference_points(prep, row["seed"], row["p_metric_n_samples"], "train")
        x = samples[: row["p_metric_n_samples"]]
        assert mmd2_unbiased(x, ref, row["p_metric_bandwidth"]) == row["value"]
        many = _metric(bandwidths=[0.01, row["p_metric_bandwidth"]], n_samples=row["p_metric_n_samples"])(x, ref)
        assert many[1].value == row["value"]
