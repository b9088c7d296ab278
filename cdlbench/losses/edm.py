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
from .base import EpsQuery, Finish, LossOutput


#: the training noise range of EDM's log-normal sigma: P_mean +- this many P_std
EDM_RANGE_STD = 3.0


@LOSSES.register("edm", constraints={"P_std": positive, "sigma_data": positive})
class EDMLoss:
    """lambda(sigma)-weighted denoising loss with log-normal sigma (EDM); sigma_data defaults to the data's RMS std."""

    def __init__(self, P_mean: float = -1.2, P_std: float = 1.2, sigma_data: float | None = None,
                 data_var=None, shape: tuple = (2,)):
        self.P_mean, self.P_std = float(P_mean), float(P_std)
        self.sigma_data = data_sigma(sigma_data, data_var)

    def training_logsnr_range(self) -> tuple[float, float]:
        """ln sigma ~ N(P_mean, P_std^2) has no bounded support: the central +-EDM_RANGE_STD standard
        deviations (99.7% of its draws), as log-SNR a = -2 ln sigma (docs/method.md section 1)."""
        ln_lo, ln_hi = self.P_mean - EDM_RANGE_STD * self.P_std, self.P_mean + EDM_RANGE_STD * self.P_std
        return -2.0 * ln_hi, -2.0 * ln_lo

    def _draw(self, x0: torch.Tensor, generator: torch.Generator | None):
        """sigma [N] and the noise n [N, *shape] of one batch (eq. 8's log-normal sigma)."""
        rnd = torch.randn((x0.shape[0],), generator=generator, device=x0.device, dtype=x0.dtype)
        sigma = torch.exp(self.P_mean + self.P_std * rnd)                                  # [N]
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return sigma, noise

    def _per_sample(self, x0: torch.Tensor, sigma: torch.Tensor, d_hat: torch.Tensor) -> LossOutput:
        sd = self.sigma_data
        weight = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2                                 # lambda(sigma)
        per_sample = weight * (d_hat - x0).pow(2).flatten(1).sum(1)                         # [N]
        return LossOutput(per_sample, {"edm": per_sample.mean().detach()})

    def query(self, x0: torch.Tensor, *, generator: torch.Generator | None,
              labels: torch.Tensor | None = None) -> tuple[EpsQuery, Finish]:
        """The same draws in the eps view (the two-phase form, losses/base.py), by docs/method.md
        section 1: D(x; sigma) = x - sigma eps_hat(x / sqrt(1 + sigma^2), a = -2 log sigma)."""
        sigma, noise = self._draw(x0, generator)
        view = (-1,) + (1,) * (x0.ndim - 1)
        x = x0 + sigma.view(view) * noise

        def finish(eps_hat: torch.Tensor) -> LossOutput:
            return self._per_sample(x0, sigma, x - sigma.view(view) * eps_hat)
        return EpsQuery(x * torch.rsqrt(1.0 + sigma * sigma).view(view), -2.0 * torch.log(sigma), labels), finish

    def __call__(self, denoiser, x0: torch.Tensor, *, generator: torch.Generator | None,
                 labels: torch.Tensor | None = None) -> LossOutput:
        sigma, noise = self._draw(x0, generator)
        view = (-1,) + (1,) * (x0.ndim - 1)
        return self._per_sample(x0, sigma, denoiser.x0(x0 + sigma.view(view) * noise, sigma, labels))
