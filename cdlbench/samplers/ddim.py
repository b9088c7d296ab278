"""DDIM (Song et al. 2021, eq. 12; docs/method.md section 4) on a strided subset of the 1000-step DDPM grid.

For consecutive grid times t > t' (abar' = 1 after the last step):
    x0_hat = (x_t - sqrt(1 - abar) eps_hat) / sqrt(abar)
    x_t'   = sqrt(abar') x0_hat + sqrt(1 - abar' - sigma^2) eps_hat + sigma xi
    sigma^2 = eta^2 (1 - abar')/(1 - abar) (1 - abar/abar') = eta^2 beta~     (eq. 16)
eta = 0 is the probability-flow ODE (deterministic given x_T); eta = 1 is ancestral DDPM.
`clip_sample = c` clips x0_hat to [-c, c] and re-derives eps_hat from it (diffusers' clip_sample),
a guard against a poorly trained denoiser diverging at high noise.
"""
from __future__ import annotations

import torch

from ..constraints import non_negative, positive
from ..registry import SAMPLERS
from ..specs import SamplerSpec
from .base import SampleResult, Stopwatch, standard_noise
from .ddpm_grid import DDPMGrid, ddpm_grid


def ddim_update(grid: DDPMGrid, x: torch.Tensor, eps_hat: torch.Tensor, j, eta: float = 0.0,
                clip_sample: float | None = None) -> torch.Tensor:
    """Deterministic part of DDIM step(s) j (eq. 12 without sigma xi).

    x, eps_hat [..., N, *shape] with j an index or a slice over the leading (step) dimension."""
    abar, abar_next = grid.abar[j], grid.abar_next[j]
    view = abar.shape + (1,) * (x.ndim - abar.ndim)
    abar, abar_next = abar.reshape(view), abar_next.reshape(view)
    var = (eta ** 2) * grid.posterior_var[j].reshape(view)
    x0_hat = (x - torch.sqrt(1.0 - abar) * eps_hat) / torch.sqrt(abar)
    if clip_sample is not None:
        x0_hat = x0_hat.clamp(-clip_sample, clip_sample)
        eps_hat = (x - torch.sqrt(abar) * x0_hat) / torch.sqrt(1.0 - abar)
    return torch.sqrt(abar_next) * x0_hat + torch.sqrt((1.0 - abar_next - var).clamp_min(0.0)) * eps_hat


@SAMPLERS.register("ddim", constraints={"steps": positive, "eta": non_negative, "clip_sample": positive},
                   spec=SamplerSpec(grid="ddpm", noise="per_step", stochastic=lambda p: p["eta"] > 0,
                                    nfe=lambda p: (p["steps"], False)))
@torch.no_grad()
def ddim_sample(denoiser, x_T: torch.Tensor, *, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None, steps: int = 50, eta: float = 0.0,
                clip_sample: float | None = None, class_labels: torch.Tensor | None = None) -> SampleResult:
    """DDIM with `steps` strided over the 1000-step grid; eta = 0 is the ODE; NFE = steps."""
    grid = ddpm_grid(steps).to(x_T.device, x_T.dtype)
    std = eta * grid.posterior_var.sqrt()                      # [S], 0 on the last step
    xi = standard_noise(noise, grid.steps, x_T, generator) if eta > 0 else None
    x = x_T
    with Stopwatch(x_T.device) as clock:
        for j in range(grid.steps):
            eps_hat = denoiser.eps(x, grid.logsnr[j], class_labels)
            x = ddim_update(grid, x, eps_hat, j, eta, clip_sample)
            if xi is not None:
                x = x + std[j] * xi[j]
    return SampleResult(x, nfe=grid.steps, iterations=grid.steps, converged=True, wall_s=clock.seconds)
