"""Sequential DDPM ancestral sampler (Ho et al. 2020, Algorithm 2; docs/method.md section 4)."""
from __future__ import annotations

import torch

from ..registry import SAMPLERS
from ..specs import SamplerSpec
from .base import SampleResult, Stopwatch, standard_noise
from ..constraints import one_of, positive
from .ddpm_grid import VARIANCES, ddpm_grid


@SAMPLERS.register("ddpm", constraints={"steps": positive, "variance": one_of(*VARIANCES)},
                   spec=SamplerSpec(grid="ddpm", noise="per_step", stochastic=True, nfe=lambda p: (p["steps"], False)))
@torch.no_grad()
def ddpm_sample(denoiser, x_T: torch.Tensor, *, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None, steps: int = 1000, variance: str = "posterior",
                class_labels: torch.Tensor | None = None) -> SampleResult:
    """Ancestral DDPM; `steps` strided over the 1000-step grid; variance: beta | posterior; class_labels [N] for a class-conditional denoiser."""
    grid = ddpm_grid(steps).to(x_T.device, x_T.dtype)
    std = grid.variance(variance).sqrt()
    xi = standard_noise(noise, grid.steps, x_T, generator)
    # the coefficients of grid.mean_step, computed once as plain numbers of x's dtype (same values,
    # same rounding): the loop then costs a handful of tensor ops per step besides the denoiser
    c_eps = (grid.beta / torch.sqrt(1.0 - grid.abar)).tolist()
    c_div = torch.sqrt(1.0 - grid.beta).tolist()
    sd = std.tolist()
    x = x_T
    with Stopwatch(x_T.device) as clock:
        for j in range(grid.steps):
            eps_hat = denoiser.eps(x, grid.logsnr[j], class_labels)
            x = (x - c_eps[j] * eps_hat) / c_div[j] + sd[j] * xi[j]
    return SampleResult(x, nfe=grid.steps, iterations=grid.steps, converged=True, wall_s=clock.seconds)
