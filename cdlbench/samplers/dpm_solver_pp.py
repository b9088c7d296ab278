"""DPM-Solver++ multistep, data-prediction form (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided
Sampling of Diffusion Probabilistic Models"; docs/samplers-fast.md), on a declared schedule
(schedules_fast.py): the probability-flow ODE of the VP process solved in lambda = log(alpha/sigma).

With the data prediction m(lambda) = x0_hat(x_lambda, lambda) the exact solution from s to t is
(DPM-Solver++ section 4.1, the data-prediction counterpart of DPM-Solver's exact solution)
    x_t = (sigma_t / sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^lambda m(lambda) dlambda,
and with h = lambda_t - lambda_s, Taylor-expanding m about lambda_s and integrating term by term:
    sigma_t int e^lambda (lambda - lambda_s)^k / k! dlambda = alpha_t h^k e_{k+1}(h),
    e_1 = 1 - e^-h,  e_2 = (h - 1 + e^-h) / h,  e_3 = (h^2/2 - h + 1 - e^-h) / h^2.
With m_0, m_1, m_2 the data predictions at the current and the two previous points
(r_0 = h_0 / h, r_1 = h_1 / h the previous step sizes in lambda relative to h):
  order 1 (DPM-Solver++(1) = DDIM):   x_t = (sigma_t/sigma_s) x_s + alpha_t e_1 m_0
  order 2 (DPM-Solver++(2M), Algorithm 2):
      D = (1 + 1/(2 r_0)) m_0 - 1/(2 r_0) m_1,     x_t = (sigma_t/sigma_s) x_s + alpha_t e_1 D
  order 3 (DPM-Solver++(3M), the third-order multistep member of the same expansion):
      D1_0 = (m_0 - m_1) / r_0,  D1_1 = (m_1 - m_2) / r_1                     (= h m' + O(h^2))
      D1 = D1_0 + r_0 / (r_0 + r_1) (D1_0 - D1_1)                              (= h m' + O(h^3))
      D2 = 2 (D1_0 - D1_1) / (r_0 + r_1)                                       (= h^2 m'' + O(h^3))
      x_t = (sigma_t/sigma_s) x_s + alpha_t (e_1 m_0 + e_2 D1 + e_3 D2)
The factor 2 in D2 is what the expansion needs (D1_0 - D1_1 = h^2 m'' (r_0 + r_1) / 2 + O(h^3));
diffusers' DPMSolverMultistepScheduler (0.42) uses D2 without it, which leaves its 3M second order
(tests/samplers/test_fast_solvers.py measures both).

Multistep warm-up: step i uses order min(order, i + 1) (the history it has). The last step reaches
sigma = 0 (lambda = +inf, r_0 = 0) and is first order: x = m_0. With `lower_order_final` and fewer
than 15 steps, step i also uses at most the steps left (S - i), DPM-Solver's stabilisation at few
steps (diffusers' lower_order_final). NFE = steps.
"""
from __future__ import annotations

import math

import torch

from ..constraints import one_of, positive
from ..registry import SAMPLERS
from ..specs import SamplerSpec
from .base import SampleResult, Stopwatch
from .schedules_fast import SCHEDULE_GRIDS, SCHEDULES, SolverTimes, check_order, solver_times

ORDERS = (1, 2, 3)
LOWER_ORDER_FINAL_BELOW = 15      # steps below which the last steps lower their order


def step_order(order: int, i: int, steps: int, lower_order_final: bool) -> int:
    """The order of step i of `steps`: warm-up, the first-order last step to sigma = 0, and the
    optional lower order of the final steps."""
    p = min(order, i + 1)
    if i == steps - 1:
        return 1
    if lower_order_final and steps < LOWER_ORDER_FINAL_BELOW:
        p = min(p, steps - i)
    return p


def dpm_solver_pp_update(times: SolverTimes, i: int, x: torch.Tensor, m: list[torch.Tensor], p: int) -> torch.Tensor:
    """One DPM-Solver++ step of order p from point i to i + 1; m = [m_0, m_1, ...] the data
    predictions at points i, i - 1, ... (newest first)."""
    h = times.h(i)
    ratio = times.sigma[i + 1] / times.sigma[i]                  # sigma_t / sigma_s (0 at the clean end)
    a_t = times.alpha[i + 1]
    e1 = -math.expm1(-h)                                          # e_1 = 1 - e^-h
    if p == 1:
        return ratio * x + (a_t * e1) * m[0]
    r0 = times.h(i - 1) / h
    if p == 2:                                                    # Algorithm 2
        D = (1.0 + 0.5 / r0) * m[0] - (0.5 / r0) * m[1]
        return ratio * x + (a_t * e1) * D
    r1 = times.h(i - 2) / h
    D1_0, D1_1 = (m[0] - m[1]) / r0, (m[1] - m[2]) / r1
    D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1)
    D2 = (2.0 / (r0 + r1)) * (D1_0 - D1_1)
    e2 = (h - e1) / h                                             # (h - 1 + e^-h) / h
    e3 = (0.5 * h * h - h + e1) / (h * h)                         # (h^2/2 - h + 1 - e^-h) / h^2
    return ratio * x + a_t * (e1 * m[0] + e2 * D1 + e3 * D2)


def data_prediction(denoiser, x: torch.Tensor, times: SolverTimes, i: int, class_labels) -> torch.Tensor:
    """m = x0_hat = (z - sigma eps_hat) / alpha at schedule point i."""
    eps_hat = denoiser.eps(x, times.logsnr[i], class_labels)
    return (x - times.sigma[i] * eps_hat) / times.alpha[i]


@SAMPLERS.register("dpm_solver_pp", constraints={"steps": positive, "order": one_of(*ORDERS),
                                                 "schedule": one_of(*SCHEDULES)},
                   spec=SamplerSpec(grid=lambda p: SCHEDULE_GRIDS.get(p["schedule"]), noise="none",
                                    nfe=lambda p: (p["steps"], False)))
@torch.no_grad()
def dpm_solver_pp_sample(denoiser, x_T: torch.Tensor, *, generator: torch.Generator | None = None,
                         steps: int = 20, order: int = 2, schedule: str = "ddpm", lower_order_final: bool = True,
                         class_labels: torch.Tensor | None = None) -> SampleResult:
    """DPM-Solver++ multistep (order 2: 2M, order 3: 3M) in data prediction on `schedule`; NFE = steps."""
    check_order(order, ORDERS)
    times = solver_times(schedule, steps)
    x, history = x_T, []
    with Stopwatch(x_T.device) as clock:
        for i in range(steps):
            history = [data_prediction(denoiser, x, times, i, class_labels)] + history[:order - 1]
            x = dpm_solver_pp_update(times, i, x, history, step_order(order, i, steps, lower_order_final))
    return SampleResult(x, nfe=steps, iterations=steps, converged=True, wall_s=clock.seconds)
