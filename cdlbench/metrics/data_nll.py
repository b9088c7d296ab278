"""Negative log-likelihood of the samples under the exact data density (datasets that declare one):

    NLL = -(1/N) sum_i log p_data(x_i),   x_i ~ p_model,

an unbiased estimate of the cross-entropy H(p_model, p_data) = H(p_model) + KL(p_model || p_data)
in nats per sample (its standard error is std(log p_data(x_i)) / sqrt(N)). Not minimised by
p_model = p_data alone: a model that puts all its samples on the modes of p_data scores lower
than p_data itself, so read it beside `kl` (docs/metrics.md, "Data NLL")."""
from __future__ import annotations

import torch

from ..registry import METRICS
from ..specs import MetricSpec
from .base import Metric
from .density import exact_log_density


@METRICS.register("data_nll", constraints={"n_samples": lambda v: None if v is None or (isinstance(v, int) and v >= 1)
                                           else "must be null (every sample) or an integer >= 1"},
                  spec=MetricSpec(unit="nats", label="data NLL", needs=("exact_density",), context=("dataset",)))
class DataNLL(Metric):
    """-mean log p_data(samples) under the dataset's exact density, nats per sample (cross-entropy).

    n_samples: samples scored (null: every sample of the cell)."""

    def __init__(self, n_samples: int | None = None):
        self.n_samples = None if n_samples is None else int(n_samples)

    def __call__(self, samples: torch.Tensor, reference: torch.Tensor, dataset=None) -> float:
        x = samples if self.n_samples is None else samples[: self.n_samples]
        return float(-exact_log_density(dataset, x, "data_nll").mean().item())
