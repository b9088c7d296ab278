"""DDPM simple loss (Ho et al. 2020, eq. 14): t ~ U{0..T-1}, || eps - eps_theta(z_t, a_t) ||^2,
averaged over the dimensions (`reduction: mean`, cdlbench's default) or summed over them
(`reduction: sum`, as the CDL authors' 2-D reference code writes it: d times the mean, so the
same minimiser with a d-times larger gradient; docs/method.md section 7)."""
from __future__ import annotations

import torch

from ..constraints import one_of
from ..diffusion.schedules import ddpm_logsnr
from ..registry import LOSSES
from .base import EpsQuery, Finish, LossOutput, QueryLoss, vp_noise

REDUCTIONS = ("mean", "sum")


@LOSSES.register("ddpm", constraints={"reduction": one_of(*REDUCTIONS)}, neutral={"reduction": "mean"})
class DDPMLoss(QueryLoss):
    """eps-MSE with t uniform on the 1000-step linear-beta grid; reduction over dimensions mean | sum."""

    def __init__(self, num_steps: int = 1000, reduction: str = "mean"):
        self.logsnr = ddpm_logsnr(num_steps).float()
        self.reduction = reduction

    def training_logsnr_range(self) -> tuple[float, float]:
        """The log-SNRs of the DDPM grid it draws t from (the ends of the 1000-step linear-beta grid)."""
        return float(self.logsnr.min()), float(self.logsnr.max())

    def query(self, x0: torch.Tensor, *, generator: torch.Generator | None,
              labels: torch.Tensor | None = None) -> tuple[EpsQuery, Finish]:
        """Draw t and eps; the loss from eps_hat(z_t, a_t) (the two-phase form, losses/base.py)."""
        t = torch.randint(0, self.logsnr.numel(), (x0.shape[0],), generator=generator, device=x0.device)
        a = self.logsnr.to(x0.device)[t]
        z, eps = vp_noise(x0, a, generator)

        def finish(eps_hat: torch.Tensor) -> LossOutput:
            squared = (eps - eps_hat).pow(2).flatten(1)
            per_sample = squared.sum(1) if self.reduction == "sum" else squared.mean(1)
            return LossOutput(per_sample, {"mse": per_sample.mean().detach()})
        return EpsQuery(z, a, labels), finish
