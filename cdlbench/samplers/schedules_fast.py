"""Time schedules of the fast sequential solvers (DPM-Solver++, UniPC, iPNDM; docs/samplers-fast.md),
all on the same variance-preserving process as the 1000-step DDPM grid:
    z_a = alpha_a x + sigma_a eps,  alpha_a = sqrt(s(a)), sigma_a = sqrt(s(-a)),  lambda = a / 2 = log(alpha / sigma)
(a the log-SNR, s the sigmoid; lambda is the "half log-SNR" of Lu et al. 2022).

A schedule of `steps` is steps + 1 log-SNR values a_0 < a_1 < ... < a_steps = +inf: the solver
evaluates the denoiser at a_0 .. a_{steps-1} (NFE = steps) and its last step reaches clean data.
    "ddpm":           the strided DDPM grid of DDIM (Song et al. 2021, section 4.2; ddpm_grid.py),
                      so a solver compares with DDIM at equal NFE;
    "logsnr-uniform": a uniform in log-SNR between the DDPM grid's ends (DPM-Solver's "logSNR"
                      time steps, Lu et al. 2022: equal steps h in lambda);
    "karras":         EDM's polynomial steps (Karras et al. 2022, eq. 5, rho = 7) in sigma_VE = exp(-a/2)
                      between the DDPM grid's ends (sigma_VE 0.010 .. 157).
The two continuous schedules reach log-SNRs between the DDPM grid points; a denoiser trained on the
discrete grid sees them as it sees EDM's sigma grid (heun, euler).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..diffusion.schedules import ddpm_logsnr, karras_sigmas, logsnr_from_sigma
from .ddpm_grid import ddpm_grid

SCHEDULES = ("ddpm", "logsnr-uniform", "karras")
# the grid each schedule runs on, as SamplerSpec.grid names it ("edm": Karras' sigma grid)
SCHEDULE_GRIDS = {"ddpm": "ddpm", "logsnr-uniform": "logsnr", "karras": "edm"}
KARRAS_RHO = 7.0


def schedule_logsnr(schedule: str, steps: int) -> torch.Tensor:
    """The steps + 1 log-SNR values of a schedule, float64, increasing, the last +inf (clean data)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    ends = ddpm_logsnr()                          # a_t of the 1000-step grid: a_999 = -10.12 .. a_0 = +9.21
    a_lo, a_hi = float(ends[-1]), float(ends[0])
    if schedule == "ddpm":
        a = ddpm_grid(steps).logsnr.double()
    elif schedule == "logsnr-uniform":
        a = torch.linspace(a_lo, a_hi, steps, dtype=torch.float64)          # steps = 1: [a_lo]
    elif schedule == "karras":
        sig = karras_sigmas(steps, math.exp(-0.5 * a_hi), math.exp(-0.5 * a_lo), KARRAS_RHO)[:-1]
        a = logsnr_from_sigma(sig)
    else:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    return torch.cat([a, a.new_full((1,), math.inf)])


@dataclass(frozen=True)
class SolverTimes:
    """Per schedule point i (steps + 1 of them) as Python floats in float64: log-SNR a, alpha, sigma, lambda.
    The last point is clean data: alpha = 1, sigma = 0, lambda = +inf."""

    logsnr: list[float]
    alpha: list[float]
    sigma: list[float]
    lam: list[float]

    @property
    def steps(self) -> int:
        return len(self.logsnr) - 1

    def h(self, i: int) -> float:
        """Step size in lambda of step i (point i -> i + 1); +inf for the last step."""
        return self.lam[i + 1] - self.lam[i]


def solver_times(schedule: str, steps: int) -> SolverTimes:
    a = schedule_logsnr(schedule, steps)
    alpha = torch.sigmoid(a).sqrt().tolist()
    sigma = torch.sigmoid(-a).sqrt().tolist()
    return SolverTimes(a.tolist(), alpha, sigma, (0.5 * a).tolist())


def check_order(order: int, allowed: tuple[int, ...]) -> None:
    if order not in allowed:
        raise ValueError(f"order must be one of {', '.join(map(str, allowed))}, got {order!r}")
