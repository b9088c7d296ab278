"""DDPM simple loss (Ho et al. 2020, eq. 14): t ~ U{0..T-1}, || eps - eps_theta(z_t, a_t) ||^2 (mean over dims)."""
from __future__ import annotations

import torch

from ..diffusion.schedules import ddpm_logsnr
from ..registry import LOSSES
from .base import LossOutput, vp_noise


@LOSSES.register("ddpm")
class DDPMLoss:
    """eps-MSE with t uniform on the 1000-step linear-beta grid."""

    def __init__(self, num_steps: int = 1000):
        self.logsnr = ddpm_logsnr(num_steps).float()

    def __call__(self, denoiser, x0: torch.Tensor, *, generator: torch.Generator | None,
                 labels: torch.Tensor | None = None) -> LossOutput:
        t = torch.randint(0, self.logsnr.numel(), (x0.shape[0],), generator=generator, device=x0.device)
        a = self.logsnr.to(x0.device)[t]
        z, eps = vp_noise(x0, a, generator)
        per_sample = (eps - denoiser.eps(z, a, labels)).pow(2).flatten(1).mean(1)
        return LossOutput(per_sample, {"mse": per_sample.mean().detach()})
