"""KL(p_model || p_data) from the samples alone, where only p_data's density is known:

    KL = E_model[log p_model - log p_data] = H(p_model, p_data) - H(p_model),

the cross-entropy estimated exactly-unbiasedly by -(1/N) sum_i log p_data(x_i) (`data_nll`), the
entropy of the samples by the Kozachenko-Leonenko k-nearest-neighbour estimator (Kozachenko &
Leonenko 1987; Kraskov, Stoegbauer & Grassberger 2004, eq. 20 written with rho = eps / 2):

    H_hat = psi(N) - psi(k) + log c_d + (d / N) sum_i log rho_k(i),

rho_k(i) the Euclidean distance from x_i to its k-th nearest other sample, c_d = pi^(d/2) /
Gamma(d/2 + 1) the volume of the unit ball. H_hat is consistent; at finite N its bias grows with
the dimension d and with the curvature of p_model at scale rho_k (it smooths the density over
balls of k neighbours), so KL_hat can fall slightly below 0 for a model equal to the data law.
Neighbour searches run over blocks of rows (bounded memory); docs/metrics.md, "KL"."""
from __future__ import annotations

import math

import torch

from ..registry import METRICS
from ..specs import MetricSpec
from .base import Metric
from .density import exact_log_density
from .mmd import block_rows


def kth_neighbour_distance(x: torch.Tensor, k: int, block: int | None = None) -> torch.Tensor:
    """Distance from each row of x [N, ...] to its k-th nearest other row -> [N] (float64), `block`
    rows at a time (None: bounded by the MMD module's MAX_BLOCK_ELEMENTS)."""
    x = x.flatten(1).double()
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k-th neighbour: need 1 <= k < N, got k={k}, N={n}")
    block = block or block_rows(n)
    out = []
    for i in range(0, n, block):
        d = torch.cdist(x[i:i + block], x, compute_mode="donot_use_mm_for_euclid_dist")      # [b, N]
        rows = torch.arange(d.shape[0], device=x.device)
        d[rows, rows + i] = math.inf                                                        # not its own neighbour
        out.append(d.topk(k, dim=1, largest=False).values[:, -1])
    return torch.cat(out)


def knn_entropy(x: torch.Tensor, k: int, block: int | None = None) -> float:
    """Kozachenko-Leonenko estimate of the differential entropy (nats) of the law of x [N, ...]."""
    n, d = x.shape[0], x[0].numel()
    rho = kth_neighbour_distance(x, k, block)
    if bool((rho == 0).any()):
        return math.nan                          # repeated points: the law has atoms, no density
    log_unit_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1.0)
    digamma = torch.special.digamma(torch.tensor([float(n), float(k)], dtype=torch.float64))
    return float((digamma[0] - digamma[1]).item() + log_unit_ball + d * rho.log().mean().item())


def kl_model_data(x: torch.Tensor, dataset, k: int, block: int | None = None) -> float:
    """KL(p_model || p_data) estimate, nats: -mean log p_data(x) - knn_entropy(x)."""
    cross_entropy = float(-exact_log_density(dataset, x, "kl").mean().item())
    return cross_entropy - knn_entropy(x, k, block)


@METRICS.register("kl", constraints={"n_samples": lambda v: None if v is None or (isinstance(v, int) and v >= 2)
                                     else "must be null (every sample) or an integer >= 2",
                                     "k": lambda v: None if isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                     else "must be an integer >= 1"},
                  spec=MetricSpec(unit="nats", label="KL(model||data)", needs=("exact_density",), context=("dataset",)))
class KLModelData(Metric):
    """KL(p_model || p_data), nats: cross-entropy under the exact data density minus the samples'
    k-nearest-neighbour entropy.

    n_samples: samples scored (null: every sample of the cell); k: the neighbour the entropy
    estimate uses (larger: less variance, more smoothing bias)."""

    def __init__(self, n_samples: int | None = None, k: int = 5):
        self.n_samples, self.k = None if n_samples is None else int(n_samples), int(k)

    def __call__(self, samples: torch.Tensor, reference: torch.Tensor, dataset=None) -> float:
        x = samples if self.n_samples is None else samples[: self.n_samples]
        return kl_model_data(x, dataset, self.k)
