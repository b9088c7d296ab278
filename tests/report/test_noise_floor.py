"""The noise floor of a quality curve (report/noise_floor.py): the permutation null, computed with
the registered metric rebuilt from the curve's settings, has the spread of the metric between
independent sets of one law at the same sizes."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from cdlbench.metrics.mmd import mmd2_unbiased
from cdlbench.report.noise_floor import curve_metric, permutation_null


def test_the_curves_metric_is_rebuilt_from_its_settings():
    curve = pd.DataFrame({"cell": ["a", "a"], "x": [1, 2], "value": [0.1, 0.0], "p_metric_bandwidth": [0.5, 0.5],
                          "p_metric_n_samples": [100, 100], "p_metric_threshold": [None, None]})
    metric = curve_metric("mmd", curve)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(150, 2, generator=g), torch.randn(80, 2, generator=g)
    assert metric(x, y) == mmd2_unbiased(x[:100], y, 0.5)           # its bandwidth and sample count
    assert curve_metric("mmd", curve.assign(p_metric_bandwidth=[0.5, 0.1])) is None   # two settings mixed
    assert curve_metric("fid", curve) is None                          # not a per-iteration metric


def test_null_spread_matches_independent_draws_of_one_law():
    """400 permutation splits of one pooled pair vs 400 independent pairs (m = n = 100, N(0, I) in
    2-D, bw 0.5): the spreads agree within 25% (each std from 400 draws has about 3.5% relative
    standard error; the permutation null is conditional on one pool, which adds a few percent),
    and the null is centred on 0 (|mean| below 4 standard errors)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g)
    stat = lambda a, b: mmd2_unbiased(a, b, 0.5)  # noqa: E731
    null = permutation_null(stat, x, y, 400, torch.Generator().manual_seed(2))
    fresh = torch.tensor([stat(torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g)) for _ in range(400)])
    assert null.std().item() == pytest.approx(fresh.std().item(), rel=0.25)
    assert abs(null.mean().item()) < 4 * null.std().item() / math.sqrt(400)
    again = permutation_null(stat, x, y, 400, torch.Generator().manual_seed(2))
    assert torch.equal(null, again)                           # every draw from the generator passed in
