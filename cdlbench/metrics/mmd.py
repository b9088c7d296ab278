"""Maximum mean discrepancy, unbiased U-statistic (Gretton et al. 2012, eq. 3; docs/method.md section 5),
Gaussian kernel k(r) = exp(-r^2 / (2 bw)) / sqrt(2 pi bw), bw a variance (number or "median").

Kernel sums run over blocks of rows (at most MAX_BLOCK_ELEMENTS kernel entries at a time), so
8000 x 8000 sums need tens of MB, not GB. The permutation test (Gretton et al. 2012: the null law
of MMD^2_u by relabelling the pooled sample) draws all relabellings at once and
gets every permuted statistic from one blocked pass over the pooled kernel matrix
(docs/metrics.md, "MMD")."""
from __future__ import annotations

import math

import torch

from ..registry import METRICS
from .base import Metric, MetricValue
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


#: kernel entries held at once by the blocked sums (float64: 32 MiB per block matrix); rows per
#: block = MAX_BLOCK_ELEMENTS // columns, so up to 2048 x 2048 a sum is one block (as before blocks)
MAX_BLOCK_ELEMENTS = 1 << 22


def block_rows(columns: int, max_elements: int | None = None) -> int:
    """Rows of a block of a [*, columns] matrix that holds at most max_elements entries (>= 1)."""
    return max(1, (max_elements or MAX_BLOCK_ELEMENTS) // max(1, columns))


def _kernel_sums(x: torch.Tensor, y: torch.Tensor, bws: list[float], exclude_diagonal: bool,
                 block: int | None = None) -> list[torch.Tensor]:
    """sum_ij k_bw(x_i, y_j) for each bandwidth (i != j with exclude_diagonal), the squared
    distances of a block computed once for all bandwidths; per bandwidth the same operations in
    the same order as for that bandwidth alone."""
    block = block or block_rows(y.shape[0])
    totals = [torch.zeros((), dtype=torch.float64, device=x.device) for _ in bws]
    for i in range(0, x.shape[0], block):
        d2 = _sq_dists(x[i:i + block], y)
        for j, bw in enumerate(bws):
            k = torch.exp(-d2 / (2.0 * bw))
            if exclude_diagonal:
                rows = torch.arange(k.shape[0], device=x.device)
                k[rows, rows + i] = 0.0
            totals[j] = totals[j] + k.sum()
    return [t / math.sqrt(2.0 * math.pi * bw) for t, bw in zip(totals, bws)]


def _kernel_sum(x: torch.Tensor, y: torch.Tensor, bw: float, exclude_diagonal: bool, block: int | None = None) -> torch.Tensor:
    return _kernel_sums(x, y, [bw], exclude_diagonal, block)[0]


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, bandwidth: float | str = "median", block: int | None = None) -> float:
    """MMD^2_u between samples x [m, ...] and y [n, ...] (block: rows per kernel block, None: bounded
    by MAX_BLOCK_ELEMENTS)."""
    bw = median_bandwidth(x, y) if bandwidth == "median" else float(bandwidth)
    return mmd2_unbiased_many(x, y, [bw], block)[0]


def mmd2_unbiased_many(x: torch.Tensor, y: torch.Tensor, bandwidths: list[float], block: int | None = None) -> list[float]:
    """MMD^2_u at each (numeric) bandwidth, each equal to mmd2_unbiased at that bandwidth alone
    (the kernel sums share their squared distances)."""
    m, n = x.shape[0], y.shape[0]
    kxx = _kernel_sums(x, x, bandwidths, True, block)
    kyy = _kernel_sums(y, y, bandwidths, True, block)
    kxy = _kernel_sums(x, y, bandwidths, False, block)
    return [float((a / (m * (m - 1)) + b / (n * (n - 1)) - 2.0 * (c / (m * n))).item())
            for a, b, c in zip(kxx, kyy, kxy)]


def pooled_mmd2(pooled: torch.Tensor, in_first: torch.Tensor, bandwidths: list[float],
                block: int | None = None) -> torch.Tensor:
    """MMD^2_u of every split of the pooled points [N, ...] that `in_first` [N, P] (1.0: the point is
    in the first sample, 0.0: in the second; every column holds m ones) describes, at each
    bandwidth -> [len(bandwidths), P]. With a the indicator of a split and K the kernel matrix with a
    zero diagonal (the U-statistic of Gretton et al. 2012, eq. 3): sum_xx = a.K a, sum_xy = a.K (1 - a),
    sum_yy = (1 - a).K (1 - a); one blocked pass computes K @ in_first for all columns at once."""
    z = pooled.flatten(1).double()
    a = in_first.to(device=z.device, dtype=torch.float64)
    big_n = z.shape[0]
    m = int(round(float(a[:, 0].sum())))
    n = big_n - m
    if m < 2 or n < 2:
        raise ValueError(f"pooled_mmd2: each sample needs >= 2 points, got {m} and {n}")
    sums = torch.zeros((len(bandwidths), 3, a.shape[1]), dtype=torch.float64, device=z.device)   # xx, xy, yy
    rows_per_block = block or block_rows(big_n)
    for i in range(0, big_n, rows_per_block):
        d2 = _sq_dists(z[i:i + rows_per_block], z)                                   # [b, N]
        rows = torch.arange(d2.shape[0], device=z.device)
        a_rows = a[i:i + rows_per_block]                                             # [b, P]
        for j, bw in enumerate(bandwidths):
            k = torch.exp(-d2 / (2.0 * bw))
            k[rows, rows + i] = 0.0                                                  # U-statistic: no i == j terms
            k_first = k @ a                                                          # [b, P]: row sums into the first sample
            k_second = k.sum(1, keepdim=True) - k_first
            sums[j, 0] += (a_rows * k_first).sum(0)
            sums[j, 1] += (a_rows * k_second).sum(0)
            sums[j, 2] += ((1.0 - a_rows) * k_second).sum(0)
    norm = torch.tensor([math.sqrt(2.0 * math.pi * bw) for bw in bandwidths], dtype=torch.float64, device=z.device)
    mmd2 = sums[:, 0] / (m * (m - 1)) + sums[:, 2] / (n * (n - 1)) - 2.0 * sums[:, 1] / (m * n)
    return mmd2 / norm.unsqueeze(1)


def permutation_splits(m: int, n: int, permutations: int, generator: torch.Generator) -> torch.Tensor:
    """[m + n, permutations] indicators of uniformly random relabellings (m points in the first sample),
    all drawn at once from `generator`: the first m of each column's random order."""
    order = torch.rand((permutations, m + n), generator=generator, dtype=torch.float64).argsort(1)
    return (order < m).double().T


def mmd2_permutation_pvalue(x: torch.Tensor, y: torch.Tensor, observed: list[float], bandwidths: list[float],
                            permutations: int, generator: torch.Generator, block: int | None = None) -> list[float]:
    """p-value of MMD^2_u = observed (one per bandwidth) under H0: x and y from one law, from
    `permutations` random relabellings of the pooled sample: (1 + #{null >= observed}) / (1 + P),
    valid at any P (Phipson & Smyth 2010)."""
    splits = permutation_splits(x.shape[0], y.shape[0], permutations, generator)
    null = pooled_mmd2(torch.cat([x.flatten(1), y.flatten(1)]).to(splits.device), splits, bandwidths, block)
    obs = torch.tensor(observed, dtype=torch.float64).unsqueeze(1)
    return ((1.0 + (null >= obs).sum(1).double()) / (1.0 + permutations)).tolist()


def _bandwidth_ok(v):
    if v == "median" or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0):
        return None
    return "must be a positive number or 'median'"


def _bandwidths_ok(v):
    if v is None:
        return None
    if not isinstance(v, list) or not v or any(_bandwidth_ok(b) for b in v) or len(set(map(str, v))) != len(v):
        return "must be null or a non-empty list of distinct bandwidths (positive numbers or 'median')"
    return None


def _permutations_ok(v):
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "must be an integer >= 0 (0: no p-value)"


def _threshold_ok(v):
    return None if v is None or (isinstance(v, (int, float)) and v > 0) else "must be > 0"


REFERENCE_SOURCES = ("train", "fresh")
THRESHOLD_RULES = ("<", "<=")


# reference/reference_size/threshold_rule: added later, neutral at today's behaviour (training
# points, as many as samples, strict `<`); "fresh", 8000 and "<=" are the CDL reference code's.
# bandwidths/permutations: added later, neutral (one bandwidth, no p-value) so earlier keys and records stay
@METRICS.register("mmd", constraints={"bandwidth": _bandwidth_ok, "threshold": _threshold_ok,
                                      "bandwidths": _bandwidths_ok, "permutations": _permutations_ok,
                                      "n_samples": lambda v: None if v >= 2 else "must be >= 2",
                                      "reference": one_of(*REFERENCE_SOURCES), "threshold_rule": one_of(*THRESHOLD_RULES),
                                      "reference_size": lambda v: None if v is None or (isinstance(v, int) and v >= 2)
                                      else "must be null or an integer >= 2"},
                  spec=MetricSpec(label="MMD^2", per_iteration=True, headline=1, context=("generator",)),
                  neutral={"reference": "train", "reference_size": None, "threshold_rule": "<",
                           "bandwidths": None, "permutations": 0})
class MMD(Metric):
    """Unbiased MMD^2 to data points; with Picard, also per iteration and iterations to a threshold.

    reference: the points compared with, `train` (drawn from the training set without replacement)
    or `fresh` (new draws from the dataset's law); reference_size: points of the final value's
    reference (null: n_samples, the same set as the per-iteration curve); threshold_rule: `<` or
    `<=` for the iteration reaching the threshold. bandwidths: a list measured in one go instead of
    `bandwidth`, one record per bandwidth (its p_metric_bandwidth column says which; the
    per-iteration curve and threshold use the first); permutations: > 0 adds `mmd_pvalue`, the
    permutation p-value against the reference set (relabellings from the harness's generator)."""

    def __init__(self, bandwidth: float | str = "median", n_samples: int = 2000, threshold: float | None = None,
                 reference: str = "train", reference_size: int | None = None, threshold_rule: str = "<",
                 bandwidths: list | None = None, permutations: int = 0):
        self.bandwidth, self.n_samples, self.threshold = bandwidth, int(n_samples), threshold
        self.reference_source, self.final_reference_count = reference, reference_size
        self.threshold_inclusive = threshold_rule == "<="
        self.bandwidths = list(bandwidths) if bandwidths is not None else None
        self.permutations = int(permutations)
        if self.bandwidths:
            self.curve_params = {"bandwidth": self.bandwidths[0]}

    def per_iteration(self, state: torch.Tensor, reference: torch.Tensor) -> float:
        return mmd2_unbiased(state[: self.n_samples], reference, self.bandwidths[0] if self.bandwidths else self.bandwidth)

    def __call__(self, samples: torch.Tensor, reference: torch.Tensor,
                 generator: torch.Generator | None = None) -> float | list[MetricValue]:
        x = samples[: self.n_samples]
        if self.bandwidths is None and self.permutations == 0:        # as before both parameters existed
            return mmd2_unbiased(x, reference, self.bandwidth)
        given = self.bandwidths or [self.bandwidth]
        median = median_bandwidth(x, reference) if "median" in given else None
        bws = [median if b == "median" else float(b) for b in given]
        values = mmd2_unbiased_many(x, reference, bws)
        pvalues = None
        if self.permutations:
            if generator is None:
                raise ValueError("mmd: a permutation p-value needs the harness's generator (context 'generator')")
            pvalues = mmd2_permutation_pvalue(x, reference, values, bws, self.permutations, generator)
        out = []
        for i, b in enumerate(given):
            params = {"bandwidth": b} if self.bandwidths else {}
            out.append(MetricValue(values[i], None, params))
            if pvalues is not None:
                out.append(MetricValue(pvalues[i], "pvalue", params, unit="", higher_is_better=True))
        return out
