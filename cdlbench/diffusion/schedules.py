"""Noise schedules as pure functions (docs/method.md section 1).

Variance-preserving forward process in log-SNR form:
    z_a = sqrt(s(a)) x + sqrt(s(-a)) eps,      s = sigmoid, a = log-SNR.
The variance-exploding (EDM) view of the same point: sigma = exp(-a/2), x_ve = z / sqrt(s(a)).
"""
from __future__ import annotations

import math

import torch

T_DDPM = 1000


def ddpm_betas(num_steps: int = T_DDPM, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM linear beta schedule (Ho et al. 2020), float64 [num_steps]."""
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def alphas_bar(betas: torch.Tensor) -> torch.Tensor:
    """abar_t = prod_{s<=t} (1 - beta_s), float64 [T]."""
    return torch.cumprod(1.0 - betas.double(), dim=0)


def logsnr_from_alpha_bar(abar: torch.Tensor) -> torch.Tensor:
    """a_t = log(abar_t / (1 - abar_t)) (docs/method.md section 1)."""
    abar = abar.double()
    return torch.log(abar) - torch.log1p(-abar)


def ddpm_logsnr(num_steps: int = T_DDPM) -> torch.Tensor:
    """log-SNR of every step of the DDPM grid; a_0 = +9.21, a_999 = -10.12."""
    return logsnr_from_alpha_bar(alphas_bar(ddpm_betas(num_steps)))


def sigma_from_logsnr(logsnr: torch.Tensor) -> torch.Tensor:
    """EDM noise level of a VP point: sigma = exp(-a/2)."""
    return torch.exp(-0.5 * logsnr)


def logsnr_from_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """a = -2 log sigma."""
    return -2.0 * torch.log(sigma)


def vp_coefficients(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sqrt(s(a)), sqrt(s(-a))): signal and noise scale of z_a."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def strided_timesteps(steps: int, num_train_steps: int = T_DDPM) -> torch.Tensor:
    """Descending subset of the DDPM grid with `steps` entries, always ending at t = 0
    (DDIM's "linear" spacing, Song et al. 2021, section 4.2). int64 [steps]."""
    if not 1 <= steps <= num_train_steps:
        raise ValueError(f"steps must be in [1, {num_train_steps}], got {steps}")
    ts = torch.floor(torch.arange(steps, dtype=torch.float64) * (num_train_steps / steps)).long()
    return ts.flip(0)


def karras_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """EDM time discretisation (Karras et al. 2022, eq. 5) plus sigma_N = 0. float64 [steps + 1]."""
    i = torch.arange(steps, dtype=torch.float64)
    inv = 1.0 / rho
    denom = max(steps - 1, 1)
    sig = (sigma_max ** inv + i / denom * (sigma_min ** inv - sigma_max ** inv)) ** rho
    return torch.cat([sig, sig.new_zeros(1)])


def gaussian_entropy(log_var: torch.Tensor) -> torch.Tensor:
    """h_G = d/2 log(2 pi e) + 1/2 sum_i log lam_i for N(0, diag(lam))."""
    d = log_var.numel()
    return 0.5 * d * math.log(2 * math.pi * math.e) + 0.5 * log_var.sum()
