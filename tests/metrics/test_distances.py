"""Energy distance and sliced Wasserstein: against scipy's 1-D values (test
oracles only), closed forms and brute force; blocked equal to unblocked."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from cdlbench import METRICS
from cdlbench.metrics.energy import distance_sum, energy_distance2
from cdlbench.metrics.sliced_wasserstein import random_directions, sliced_wasserstein, wasserstein_1d_pp


def _normal(n, seed, d=1, loc=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, d), generator=g, dtype=torch.float64) * scale + loc


def _build(name, **params):
    return METRICS.build(name, params, device=torch.device("cpu"), cache_dir=None, reference_key="x")


def test_energy_v_statistic_is_scipys_energy_distance_squared():
    x, y = _normal(300, 0), _normal(411, 1, loc=0.4, scale=1.3)
    # scipy: sqrt(2) times the L2 distance of the empirical CDFs = the V-statistic form (Szekely & Rizzo 2013, eq. 3.3)
    ours = math.sqrt(energy_distance2(x, y, unbiased=False))
    assert ours == pytest.approx(stats.energy_distance(x[:, 0].numpy(), y[:, 0].numpy()), rel=1e-10)


def test_energy_u_statistic_by_brute_force_in_3d_and_blocked():
    x, y = _normal(50, 2, d=3), _normal(40, 3, d=3, loc=0.2)
    a, b = x.numpy(), y.numpy()
    dxy = np.linalg.norm(a[:, None] - b[None], axis=-1).mean()
    dxx = np.linalg.norm(a[:, None] - a[None], axis=-1).sum() / (50 * 49)
    dyy = np.linalg.norm(b[:, None] - b[None], axis=-1).sum() / (40 * 39)
    assert energy_distance2(x, y) == pytest.approx(2 * dxy - dxx - dyy, rel=1e-12)
    assert energy_distance2(x, y, block=3) == pytest.approx(energy_distance2(x, y), rel=1e-12)
    assert distance_sum(x, y, block=7).item() == pytest.approx(distance_sum(x, y).item(), rel=1e-13)


def test_energy_is_unbiased_around_zero_and_positive_for_a_shift():
    same = [energy_distance2(_normal(200, 10 + i), _normal(200, 50 + i)) for i in range(20)]
    # E^2 = 0 under H0; the mean of 20 estimates (sd ~ 0.003 each) stays well inside 0.005
    assert abs(float(np.mean(same))) < 0.005 and min(same) < 0                   # negative values occur
    # closed form for N(0,1) vs N(mu,1): E|X-Y| = 2 phi(mu/sqrt2) sqrt2 + mu (2 Phi(mu/sqrt2) - 1), E|X-X'| = 2/sqrt(pi)
    mu, s = 1.0, math.sqrt(2.0)
    exy = s * 2 * stats.norm.pdf(mu / s) + mu * (2 * stats.norm.cdf(mu / s) - 1)
    truth = 2 * exy - 2 * (2 / math.sqrt(math.pi))
    est = energy_distance2(_normal(3000, 7), _normal(3000, 8, loc=mu))
    assert est == pytest.approx(truth, abs=0.03)          # sd of the estimate ~0.01 at n = 3000


def test_wasserstein_1d_is_scipys_at_unequal_sizes():
    x, y = _normal(300, 4), _normal(411, 5, loc=0.4, scale=1.3)
    w1 = sliced_wasserstein(x, y, torch.ones((1, 1)), p=1)
    assert w1 == pytest.approx(stats.wasserstein_distance(x[:, 0].numpy(), y[:, 0].numpy()), rel=1e-12)
    metric = _build("sliced_wasserstein", n_samples=300)          # 1-D data: the one direction, no generator
    assert metric(x, y) == pytest.approx(w1, rel=1e-15)


def test_wasserstein_2_of_equal_sizes_is_the_sorted_pairing():
    x, y = _normal(257, 6), _normal(257, 7, loc=-0.3)
    pairs = (x[:, 0].sort().values - y[:, 0].sort().values).pow(2).mean().sqrt().item()
    assert sliced_wasserstein(x, y, torch.ones((1, 1)), p=2) == pytest.approx(pairs, rel=1e-12)
    assert wasserstein_1d_pp(x.T, y.T, 2).sqrt().item() == pytest.approx(pairs, rel=1e-12)


def test_sliced_wasserstein_on_axis_directions_and_blocks():
    x, y = _normal(120, 8, d=2), _normal(150, 9, d=2, loc=0.5)
    axes = torch.eye(2, dtype=torch.float64)
    w = [stats.wasserstein_distance(x[:, i].numpy(), y[:, i].numpy()) for i in range(2)]
    assert sliced_wasserstein(x, y, axes, p=1) == pytest.approx(sum(w) / 2, rel=1e-12)
    dirs = random_directions(2, 40, torch.Generator().manual_seed(0))
    assert torch.allclose(dirs.norm(dim=1), torch.ones(40, dtype=torch.float64))
    assert sliced_wasserstein(x, y, dirs, max_elements=300) == pytest.approx(sliced_wasserstein(x, y, dirs), rel=1e-12)
    # the same directions (same generator seed) score the shifted reference farther than the unshifted one
    metric = _build("sliced_wasserstein", n_samples=120, projections=64)
    with pytest.raises(ValueError, match="generator"):
        metric(x, y)
    a = metric(x, y, generator=torch.Generator().manual_seed(1))
    assert a == metric(x, y, generator=torch.Generator().manual_seed(1))
    assert metric(x, y - 0.5, generator=torch.Generator().manual_seed(1)) < a / 2
