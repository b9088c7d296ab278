"""EDM training loss (Karras et al. 2022, eq. 2 and 8; section 5 and Table 1):
    ln sigma ~ N(P_mean, P_std^2),   n ~ N(0, sigma^2 I),
    lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2,
    loss(x) = lambda(sigma) || D(x + n; sigma) - x ||^2        (summed over dimensions, as EDM does).
Uses the denoiser's x0 view, so it trains any parameterisation (EDM-preconditioned or eps)."""
from __future__ import annotations

import torch

from ..constraints import positive
from ..models.precond import data_sigma
from ..registry import LOSSES
from .base import LossOutput


@LOSSES.register("edm", constraints={"P_std": positive, "sigma_data": positive})
class EDMLoss:
    """lambda(sigma)-weighted denoising loss with log-normal sigma (EDM); sigma_data defaults to the data's RMS std."""

    def __init__(self, P_mean: float = -1.2, P_std: float = 1.2, sigma_data: float | None = None,
                 data_var=None, shape: tuple = (2,)):
        self.P_mean, self.P_std = float(P_mean), float(P_std)
        self.sigma_data = data_sigma(sigma_data, data_var)

    def __call__(self, denoiser, x0: torch.Tensor, *, generator: torch.Generator | None,
                 labels: torch.Tensor | None = None) -> LossOutput:
        n = x0.shape[0]
        rnd = torch.randn((n,), generator=generator, device=x0.device, dtype=x0.dtype)
        sigma = torch.exp(self.P_mean + self.P_std * rnd)                                  # [N]
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        view = (-1,) + (1,) * (x0.ndim - 1)
        sd = self.sigma_data
        weight = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2                                 # lambda(sigma)
        d_hat = denoiser.x0(x0 + sigma.view(view) * noise, sigma, labels)
        per_sample = weight * (d_hat - x0).pow(2).flatten(1).sum(1)                         # [N]
        return LossOutput(per_sample, {"edm": per_sample.mean().detach()})
