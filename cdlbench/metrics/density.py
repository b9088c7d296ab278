"""The exact log-density a metric scores samples with: datasets that declare one
(DatasetSpec(exact_density=True), `has_exact_density` and `log_density(x) -> [N]`, e.g. the
Gaussian mixtures gmm1d and 8gaussians). Suites are checked before any work (suite/compat.py:
metric needs "exact_density"); this is the runtime guard for a dataset built otherwise."""
from __future__ import annotations

import torch


def exact_log_density(dataset, x: torch.Tensor, metric: str) -> torch.Tensor:
    """log p_data(x) [N] (float64) from the dataset's exact density."""
    if not getattr(dataset, "has_exact_density", False) or not callable(getattr(dataset, "log_density", None)):
        raise ValueError(f"metric '{metric}' needs a dataset with an exact density; "
                         f"{type(dataset).__name__} has none")
    return dataset.log_density(x.flatten(1)).double()
