"""Energy distance (Szekely & Rizzo 2013), squared, as an unbiased U-statistic:

    E^2(P, Q) = 2 E|X - Y| - E|X - X'| - E|Y - Y'|,    X, X' ~ P,  Y, Y' ~ Q,  |.| Euclidean,

each expectation estimated by the mean over distinct pairs (i != j within a sample). E^2 >= 0 with
equality iff P = Q; its estimate is unbiased, so it scatters around 0 (negative values included)
when the two laws agree. It is the MMD^2 of the distance-induced kernel (Sejdinovic et al. 2013):
no bandwidth to choose. Distance sums run over blocks of rows (bounded memory);
docs/metrics.md, "Energy distance"."""
from __future__ import annotations

import torch

from ..constraints import one_of
from ..registry import METRICS
from ..specs import MetricSpec
from .base import Metric
from .mmd import REFERENCE_SOURCES, block_rows


def distance_sum(x: torch.Tensor, y: torch.Tensor, block: int | None = None) -> torch.Tensor:
    """sum_ij |x_i - y_j| over x [m, ...], y [n, ...], in float64, `block` rows of x at a time (None:
    bounded by the MMD module's MAX_BLOCK_ELEMENTS). The differences are taken directly (not
    through |x|^2 + |y|^2 - 2 x.y), so close points keep their distance to float64 precision."""
    x, y = x.flatten(1).double(), y.flatten(1).double()
    block = block or block_rows(y.shape[0])
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], block):
        total = total + torch.cdist(x[i:i + block], y, compute_mode="donot_use_mm_for_euclid_dist").sum()
    return total


def energy_distance2(x: torch.Tensor, y: torch.Tensor, unbiased: bool = True, block: int | None = None) -> float:
    """Squared energy distance between samples x [m, ...] and y [n, ...]: the U-statistic (within-
    sample means over i != j), or with unbiased=False the V-statistic (means over all m^2 / n^2
    pairs, the plug-in value between the two empirical laws, always >= 0)."""
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"energy distance: each sample needs >= 2 points, got {m} and {n}")
    wx, wy = (m * (m - 1), n * (n - 1)) if unbiased else (m * m, n * n)
    xy = distance_sum(x, y, block) / (m * n)
    xx = distance_sum(x, x, block) / wx                 # the diagonal |x_i - x_i| = 0 adds nothing
    yy = distance_sum(y, y, block) / wy
    return float((2.0 * xy - xx - yy).item())


@METRICS.register("energy", constraints={"n_samples": lambda v: None if isinstance(v, int) and v >= 2 else "must be an integer >= 2",
                                         "reference": one_of(*REFERENCE_SOURCES)},
                  spec=MetricSpec(label="energy^2"))
class EnergyDistance(Metric):
    """Squared energy distance to data points (unbiased U-statistic; no bandwidth).

    n_samples: samples scored (and reference points drawn); reference: `train` (training points)
    or `fresh` (new draws from the dataset's law)."""

    def __init__(self, n_samples: int = 2000, reference: str = "train"):
        self.n_samples, self.reference_source = int(n_samples), reference

    def __call__(self, samples: torch.Tensor, reference: torch.Tensor) -> float:
        return energy_distance2(samples[: self.n_samples], reference)
