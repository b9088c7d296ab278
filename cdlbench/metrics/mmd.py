"""Maximum mean discrepancy, unbiased U-statistic (Gretton et al. 2012, eq. 3; docs/method.md section 5),
Gaussian kernel k(r) = exp(-r^2 / (2 bw)) / sqrt(2 pi bw), bw a variance (number or "median")."""
from __future__ import annotations

import math

import torch

from ..registry import METRICS
from .base import Metric
from ..constraints import one_of
from ..specs import MetricSpec


def _sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = x.flatten(1).double(), y.flatten(1).double()
    return (x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1) - 2.0 * x @ y.T).clamp_min(0.0)


def median_bandwidth(x: torch.Tensor, y: torch.Tensor, max_points: int = 2000) -> float:
    """Median heuristic: the median squared distance between distinct pooled points."""
    pooled = torch.cat([x[:max_points], y[:max_points]]).flatten(1)
    d2 = _sq_dists(pooled, pooled)
    iu = torch.triu_indices(d2.shape[0], d2.shape[0], offset=1)
    return float(d2[iu[0], iu[1]].median().item())


def _kernel_sum(x: torch.Tensor, y: torch.Tensor, bw: float, exclude_diagonal: bool, block: int = 4096) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], block):
        k = torch.exp(-_sq_dists(x[i:i + block], y) / (2.0 * bw))
        if exclude_diagonal:
            rows = torch.arange(k.shape[0], device=x.device)
            k[rows, rows + i] = 0.0
        total = total + k.sum()
    return total / math.sqrt(2.0 * math.pi * bw)


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, bandwidth: float | str = "median") -> float:
    """MMD^2_u between samples x [m, ...] and y [n, ...]."""
    bw = median_bandwidth(x, y) if bandwidth == "median" else float(bandwidth)
    m, n = x.shape[0], y.shape[0]
    kxx = _kernel_sum(x, x, bw, True) / (m * (m - 1))
    kyy = _kernel_sum(y, y, bw, True) / (n * (n - 1))
    kxy = _kernel_sum(x, y, bw, False) / (m * n)
    return float((kxx + kyy - 2.0 * kxy).item())


def _bandwidth_ok(v):
    if v == "median" or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0):
        return None
    return "must be a positive number or 'median'"


def _threshold_ok(v):
    return None if v is None or (isinstance(v, (int, float)) and v > 0) else "must be > 0"


REFERENCE_SOURCES = ("train", "fresh")
THRESHOLD_RULES = ("<", "<=")


# reference/reference_size/threshold_rule: added later, neutral at today's behaviour (training
# points, as many as samples, strict `<`); "fresh", 8000 and "<=" are the CDL reference code's
@METRICS.register("mmd", constraints={"bandwidth": _bandwidth_ok, "threshold": _threshold_ok,
                                      "n_samples": lambda v: None if v >= 2 else "must be >= 2",
                                      "reference": one_of(*REFERENCE_SOURCES), "threshold_rule": one_of(*THRESHOLD_RULES),
                                      "reference_size": lambda v: None if v is None or (isinstance(v, int) and v >= 2)
                                      else "must be null or an integer >= 2"},
                  spec=MetricSpec(label="MMD^2", per_iteration=True, headline=1),
                  neutral={"reference": "train", "reference_size": None, "threshold_rule": "<"})
class MMD(Metric):
    """Unbiased MMD^2 to data points; with Picard, also per iteration and iterations to a threshold.

    reference: the points compared with, `train` (drawn from the training set without replacement)
    or `fresh` (new draws from the dataset's law); reference_size: points of the final value's
    reference (null: n_samples, the same set as the per-iteration curve); threshold_rule: `<` or
    `<=` for the iteration reaching the threshold."""

    def __init__(self, bandwidth: float | str = "median", n_samples: int = 2000, threshold: float | None = None,
                 reference: str = "train", reference_size: int | None = None, threshold_rule: str = "<"):
        self.bandwidth, self.n_samples, self.threshold = bandwidth, int(n_samples), threshold
        self.reference_source, self.final_reference_count = reference, reference_size
        self.threshold_inclusive = threshold_rule == "<="

    def __call__(self, samples: torch.Tensor, reference: torch.Tensor) -> float:
        return mmd2_unbiased(samples[: self.n_samples], reference, self.bandwidth)
