"""iPNDM (Zhang & Chen, ICLR 2023, "Fast Sampling of Diffusion Models with Exponential Integrator",
the improved PNDM; docs/samplers-fast.md) on a declared schedule (schedules_fast.py).

In the scaled variables xbar = z / alpha and sigmabar = sigma / alpha = exp(-a/2), the probability-flow
ODE of the VP process is dxbar/dsigmabar = eps_hat(alpha xbar, a) (DDIM's ODE, Song et al. 2021, eq. 14),
on which DDIM is the Euler step. PNDM (Liu et al. 2022) integrates it with a linear multistep
(Adams-Bashforth) method on eps; iPNDM replaces PNDM's Runge-Kutta warm-up by lower-order multistep
steps, so every step costs one evaluation:
    xbar_{i+1} = xbar_i + (sigmabar_{i+1} - sigmabar_i) sum_j c_j eps_{i-j},
with the equal-step Adams-Bashforth weights of order q = min(order, i + 1):
    q = 1: [1];  q = 2: [3, -1] / 2;  q = 3: [23, -16, 5] / 12;  q = 4: [55, -59, 37, -9] / 24
(the integrals over one step of the Lagrange polynomials through the last q equally spaced points).
iPNDM keeps these weights on unequal steps; its order there is that of the weights' mismatch,
about 2 on a smoothly varying grid (tests/samplers/test_fast_solvers.py measures it). order = 1 is DDIM.
The last step reaches sigmabar = 0, where xbar is the sample. NFE = steps.
"""
from __future__ import annotations

from fractions import Fraction

import torch

from ..constraints import one_of, positive
from ..registry import SAMPLERS
from ..specs import SamplerSpec
from .base import SampleResult, Stopwatch
from .schedules_fast import SCHEDULE_GRIDS, SCHEDULES, check_order, solver_times

ORDERS = (1, 2, 3, 4)


def adams_bashforth_weights(q: int) -> list[float]:
    """c_0 .. c_{q-1} (newest first): int_0^1 l_j(u) du for the Lagrange basis through the nodes
    u = 0, -1, .., -(q-1) (the current and the q - 1 earlier points, in units of one step)."""
    nodes = [Fraction(-j) for j in range(q)]
    weights = []
    for j in range(q):
        poly = [Fraction(1)]                              # coefficients of prod_{k != j} (u - u_k) / (u_j - u_k)
        for k in range(q):
            if k == j:
                continue
            scale = nodes[j] - nodes[k]
            poly = [(c_hi - nodes[k] * c) / scale for c, c_hi in zip(poly + [Fraction(0)], [Fraction(0)] + poly)]
        weights.append(float(sum(c / (n + 1) for n, c in enumerate(poly))))
    return weights


WEIGHTS = {q: adams_bashforth_weights(q) for q in ORDERS}


@SAMPLERS.register("ipndm", constraints={"steps": positive, "order": one_of(*ORDERS), "schedule": one_of(*SCHEDULES)},
                   spec=SamplerSpec(grid=lambda p: SCHEDULE_GRIDS.get(p["schedule"]), noise="none",
                                    nfe=lambda p: (p["steps"], False)))
@torch.no_grad()
def ipndm_sample(denoiser, x_T: torch.Tensor, *, generator: torch.Generator | None = None, steps: int = 20,
                 order: int = 4, schedule: str = "ddpm", class_labels: torch.Tensor | None = None) -> SampleResult:
    """iPNDM: Adams-Bashforth on eps in (xbar, sigmabar) with lower-order warm-up; order 1 is DDIM; NFE = steps."""
    check_order(order, ORDERS)
    times = solver_times(schedule, steps)
    sigmabar = [s / a for s, a in zip(times.sigma, times.alpha)]          # 0 at the clean end
    xbar, eps_history = x_T / times.alpha[0], []
    with Stopwatch(x_T.device) as clock:
        for i in range(steps):
            eps_history = [denoiser.eps(xbar * times.alpha[i], times.logsnr[i], class_labels)] + eps_history[:order - 1]
            c = WEIGHTS[len(eps_history)]
            xbar = xbar + (sigmabar[i + 1] - sigmabar[i]) * sum(c_j * e_j for c_j, e_j in zip(c, eps_history))
    return SampleResult(xbar, nfe=steps, iterations=steps, converged=True, wall_s=clock.seconds)
