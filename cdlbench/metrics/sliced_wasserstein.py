"""Sliced Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015):

    SW_p(P, Q) = ( E_theta W_p^p(theta#P, theta#Q) )^(1/p),   theta uniform on the unit sphere,

estimated with L random directions (drawn from the harness's generator). Each 1-D W_p between the
projected empirical laws is exact: on the real line W_p^p = Integral_0^1 |F^-1(u) - G^-1(u)|^p du
(the quantile-function form of optimal transport in 1-D), the quantile functions being step functions that
change at u = i/m and u = j/n, so the integral is a sum over the m + n pieces between those
points. In 1-D the one direction is +-1 and SW_p = W_p. The plug-in estimate is biased upwards
at finite sample sizes (> 0 even when P = Q; docs/metrics.md, "Sliced Wasserstein")."""
from __future__ import annotations

import torch

from ..constraints import one_of
from ..registry import METRICS
from ..specs import MetricSpec
from .base import Metric
from .mmd import MAX_BLOCK_ELEMENTS, REFERENCE_SOURCES


def wasserstein_1d_pp(u: torch.Tensor, v: torch.Tensor, p: int) -> torch.Tensor:
    """W_p^p between the empirical laws of each row of u [L, m] and v [L, n] -> [L] (float64)."""
    u, v = u.double().sort(1).values, v.double().sort(1).values
    m, n = u.shape[1], v.shape[1]
    dev = u.device
    cuts = torch.cat([torch.arange(1, m + 1, device=dev, dtype=torch.float64) / m,
                      torch.arange(1, n + 1, device=dev, dtype=torch.float64) / n]).sort().values   # [m + n]
    width = torch.diff(cuts, prepend=cuts.new_zeros(1))                                  # pieces of [0, 1]
    mid = cuts - 0.5 * width                     # inside each piece of positive width: no cut there
    iu = (mid * m).ceil().long().clamp(1, m) - 1                                          # F^-1(mid) = u_(iu)
    iv = (mid * n).ceil().long().clamp(1, n) - 1
    return ((u[:, iu] - v[:, iv]).abs().pow(p) * width).sum(1)


def random_directions(d: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """count directions uniform on the unit sphere of R^d (normalised Gaussians) -> [count, d]."""
    g = torch.randn((count, d), generator=generator, dtype=torch.float64)
    return g / g.norm(dim=1, keepdim=True)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, directions: torch.Tensor, p: int = 1,
                       max_elements: int = MAX_BLOCK_ELEMENTS) -> float:
    """SW_p between x [m, ...] and y [n, ...] over the given directions [L, d]; directions are
    processed in blocks so that a block's projections hold at most max_elements values."""
    x, y = x.flatten(1).double(), y.flatten(1).double()
    directions = directions.to(device=x.device, dtype=torch.float64)
    per_block = max(1, max_elements // (x.shape[0] + y.shape[0]))
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for i in range(0, directions.shape[0], per_block):
        theta = directions[i:i + per_block]                                               # [b, d]
        total = total + wasserstein_1d_pp(theta @ x.T, theta @ y.T, p).sum()
    return float((total / directions.shape[0]).pow(1.0 / p).item())


@METRICS.register("sliced_wasserstein",
                  constraints={"n_samples": lambda v: None if isinstance(v, int) and v >= 1 else "must be an integer >= 1",
                               "projections": lambda v: None if isinstance(v, int) and v >= 1 else "must be an integer >= 1",
                               "p": one_of(1, 2), "reference": one_of(*REFERENCE_SOURCES)},
                  spec=MetricSpec(label="SW", context=("generator",)))
class SlicedWasserstein(Metric):
    """Sliced Wasserstein distance SW_p to data points over random directions (in data units).

    n_samples: samples scored (and reference points drawn); projections: random directions
    (from the harness's generator; 1-D data has one); p: 1 or 2; reference: `train` or `fresh`."""

    def __init__(self, n_samples: int = 2000, projections: int = 128, p: int = 1, reference: str = "train"):
        self.n_samples, self.projections, self.p = int(n_samples), int(projections), int(p)
        self.reference_source = reference

    def __call__(self, samples: torch.Tensor, reference: torch.Tensor, generator: torch.Generator | None = None) -> float:
        x = samples[: self.n_samples]
        d = x[0].numel()
        if d == 1:
            directions = torch.ones((1, 1), dtype=torch.float64)
        elif generator is None:
            raise ValueError("sliced_wasserstein: random directions need the harness's generator (context 'generator')")
        else:
            directions = random_directions(d, self.projections, generator)
        return sliced_wasserstein(x, reference, directions, self.p)
