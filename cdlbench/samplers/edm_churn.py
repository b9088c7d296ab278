"""EDM time steps and stochastic "churn" (Karras et al. 2022, eq. 5 and Algorithm 2, lines 4-6),
shared by the Heun and Euler samplers.

    sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho,  sigma_N = 0      (eq. 5)
    gamma_i = min(S_churn/N, sqrt(2) - 1) if S_tmin <= sigma_i <= S_tmax else 0           (Alg. 2 line 4)
    sigma_hat = sigma_i (1 + gamma_i),  x_hat = x_i + sqrt(sigma_hat^2 - sigma_i^2) S_noise xi   (lines 5-6)
"""
from __future__ import annotations

import math

import torch

from ..diffusion.schedules import karras_sigmas


def churn_gammas(sigmas: torch.Tensor, S_churn: float, S_tmin: float, S_tmax: float) -> list[float]:
    """gamma_i for each of the N = len(sigmas) - 1 steps (Algorithm 2, line 4)."""
    n = sigmas.numel() - 1
    g = min(S_churn / n, math.sqrt(2.0) - 1.0) if S_churn > 0 else 0.0
    return [g if S_tmin <= float(s) <= S_tmax else 0.0 for s in sigmas[:-1]]


def churn(x: torch.Tensor, sigma: float, gamma: float, xi: torch.Tensor | None, S_noise: float) -> tuple[torch.Tensor, float]:
    """Raise the noise level of x from sigma to sigma_hat = sigma (1 + gamma) (lines 5-6).
    x, xi [N, *shape] (xi standard normal; unused when gamma = 0)."""
    if gamma <= 0:
        return x, sigma
    sigma_hat = sigma * (1.0 + gamma)
    return x + math.sqrt(sigma_hat ** 2 - sigma ** 2) * S_noise * xi, sigma_hat


def edm_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    """The N + 1 noise levels of eq. 5 (last one 0) as Python floats."""
    return [float(s) for s in karras_sigmas(steps, sigma_min, sigma_max, rho)]


def check_edm(steps: int, sigma_min: float, sigma_max: float) -> None:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
