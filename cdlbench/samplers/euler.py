"""EDM's first-order counterpart of Heun: Euler steps on the probability-flow ODE
dx/dsigma = (x - D(x; sigma)) / sigma over the EDM time steps (Karras et al. 2022, eq. 5),
with the same optional churn as Algorithm 2 (lines 4-6) and no correction. NFE = N."""
from __future__ import annotations

import torch

from ..registry import SAMPLERS
from ..specs import SamplerSpec
from .base import SampleResult, Stopwatch, standard_noise
from .edm_churn import check_edm, churn, churn_gammas, edm_sigmas
from .heun import EDM_CONSTRAINTS


@SAMPLERS.register("euler", constraints=EDM_CONSTRAINTS,
                   spec=SamplerSpec(grid="edm", noise="per_step", stochastic=lambda p: p["S_churn"] > 0,
                                    nfe=lambda p: (p["steps"], False)))
@torch.no_grad()
def euler_sample(denoiser, x_T: torch.Tensor, *, generator: torch.Generator | None = None,
                 noise: torch.Tensor | None = None, steps: int = 18, sigma_min: float = 0.002,
                 sigma_max: float = 80.0, rho: float = 7.0, S_churn: float = 0.0, S_tmin: float = 0.0,
                 S_tmax: float = float("inf"), S_noise: float = 1.0,
                class_labels: torch.Tensor | None = None) -> SampleResult:
    """Euler on EDM's time steps (optionally with churn), NFE = steps."""
    check_edm(steps, sigma_min, sigma_max)
    sig = edm_sigmas(steps, sigma_min, sigma_max, rho)
    gammas = churn_gammas(torch.tensor(sig), S_churn, S_tmin, S_tmax)
    xi = standard_noise(noise, steps, x_T, generator) if any(g > 0 for g in gammas) else None
    x = x_T * sig[0]
    with Stopwatch(x_T.device) as clock:
        for i in range(steps):
            x_hat, s_hat = churn(x, sig[i], gammas[i], None if xi is None else xi[i], S_noise)
            d = (x_hat - denoiser.x0(x_hat, s_hat, class_labels)) / s_hat
            x = x_hat + (sig[i + 1] - s_hat) * d
    return SampleResult(x, nfe=steps, iterations=steps, converged=True, wall_s=clock.seconds)
