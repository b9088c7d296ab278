"""EDM's stochastic Heun sampler (Karras et al. 2022, Algorithm 2; docs/method.md section 4).
With S_churn = 0 it is the deterministic Algorithm 1 (second-order Heun on the probability-flow
ODE dx/dsigma = (x - D(x; sigma)) / sigma). One Euler step plus a trapezoid correction per
step, except the last (sigma_N = 0): NFE = 2N - 1.

The chain starts at x_0 = sigma_0 * x_T (x_T standard normal), in the variance-exploding view,
and uses the denoiser's `x0` view."""
from __future__ import annotations

import torch

from ..constraints import non_negative, positive
from ..registry import SAMPLERS
from ..specs import SamplerSpec
from .base import SampleResult, Stopwatch, standard_noise
from .edm_churn import check_edm, churn, churn_gammas, edm_sigmas

EDM_CONSTRAINTS = {"steps": positive, "sigma_min": positive, "sigma_max": positive, "rho": positive,
                   "S_churn": non_negative, "S_tmin": non_negative, "S_tmax": non_negative,
                   "S_noise": non_negative}


@SAMPLERS.register("heun", constraints=EDM_CONSTRAINTS,
                   spec=SamplerSpec(grid="edm", noise="per_step", stochastic=lambda p: p["S_churn"] > 0,
                                    nfe=lambda p: (2 * p["steps"] - 1, False)))
@torch.no_grad()
def heun_sample(denoiser, x_T: torch.Tensor, *, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None, steps: int = 18, sigma_min: float = 0.002,
                sigma_max: float = 80.0, rho: float = 7.0, S_churn: float = 0.0, S_tmin: float = 0.0,
                S_tmax: float = float("inf"), S_noise: float = 1.0,
                class_labels: torch.Tensor | None = None) -> SampleResult:
    """EDM Heun (Algorithm 2; Algorithm 1 when S_churn = 0), NFE = 2*steps - 1."""
    check_edm(steps, sigma_min, sigma_max)
    sig = edm_sigmas(steps, sigma_min, sigma_max, rho)                    # N + 1 levels, sig[N] = 0
    gammas = churn_gammas(torch.tensor(sig), S_churn, S_tmin, S_tmax)
    xi = standard_noise(noise, steps, x_T, generator) if any(g > 0 for g in gammas) else None
    x = x_T * sig[0]                                                        # line 2: x_0 ~ N(0, sigma_0^2 I)
    nfe = 0
    with Stopwatch(x_T.device) as clock:
        for i in range(steps):
            x_hat, s_hat = churn(x, sig[i], gammas[i], None if xi is None else xi[i], S_noise)   # lines 4-6
            d = (x_hat - denoiser.x0(x_hat, s_hat, class_labels)) / s_hat                                      # line 7
            nfe += 1
            x = x_hat + (sig[i + 1] - s_hat) * d                                                 # line 8
            if sig[i + 1] != 0:                                                                  # lines 9-11
                d_next = (x - denoiser.x0(x, sig[i + 1], class_labels)) / sig[i + 1]
                nfe += 1
                x = x_hat + (sig[i + 1] - s_hat) * (0.5 * d + 0.5 * d_next)
    return SampleResult(x, nfe=nfe, iterations=steps, converged=True, wall_s=clock.seconds)
