"""UniPC, data-prediction multistep form (Zhao et al., NeurIPS 2023, "UniPC: A Unified
Predictor-Corrector Framework for Fast Sampling of Diffusion Models"; docs/samplers-fast.md): the
predictor UniP-p followed by the corrector UniC-p, which raises the order to p + 1 at no extra
denoiser evaluation, on a declared schedule (schedules_fast.py).

In lambda = log(alpha/sigma), m the data prediction, from point s to t (h = lambda_t - lambda_s):
the exact solution x_t = (sigma_t/sigma_s) x_s + sigma_t int e^lambda m dlambda expands as
    x_t = (sigma_t/sigma_s) x_s + alpha_t sum_{k>=0} g_k(h) m^(k)(lambda_s),
    g_k(h) = int_0^h e^(u-h) u^k / k! du:   g_0 = 1 - e^-h,  g_k = h^k / k! - g_{k-1}  (by parts).
With earlier points s_1 .. s_{p-1} at r_j = (lambda_{s_j} - lambda_s) / h (< 0) and
D_j = (m(s_j) - m_0) / r_j = sum_k r_j^(k-1) h^k m^(k) / k!, the update (UniPC section 3, its
unified form, here in data prediction)
    x_t = (sigma_t/sigma_s) x_s + alpha_t g_0 m_0 + alpha_t B(h) sum_j a_j D_j
matches the expansion up to order n when the a_j solve the order conditions
    sum_j a_j r_j^(k-1) = k! g_k(h) / (h^k B(h)),   k = 1 .. n,
with B(h) any function with B(h) = O(h): variant "bh1" B(h) = h, "bh2" B(h) = 1 - e^-h (the paper's
B_1 and B_2, written here for the data prediction, where its h is -h).
  UniP-p (predictor): the p - 1 previous points, conditions k = 1 .. p - 1: order p (Corollary 3.2).
  UniC-p (corrector): after the denoiser has been evaluated at the predicted x_t (m_t), the same
      update from s with the extra point r = 1, D = m_t - m_0, conditions k = 1 .. p: order p + 1
      (Theorem 3.1).
      It replaces x_t; m_t (evaluated at the uncorrected x_t) stays the history, so NFE = steps.
With a single unknown (UniP-2, UniC-1) a_1 = 1/2, the h -> 0 limit of its solution, as in the
UniPC authors' implementation; the local error stays of the same order.
Warm-up: step i uses order min(order, i + 1); with `lower_order_final` also at most the steps
left (S - i); the last step reaches sigma = 0 (lambda = +inf) and is first order (x = m_0), and
no corrector follows it (no evaluation there).
"""
from __future__ import annotations

import math

import torch

from ..constraints import one_of, positive
from ..registry import SAMPLERS
from ..specs import SamplerSpec
from .base import SampleResult, Stopwatch
from .dpm_solver_pp import data_prediction
from .schedules_fast import SCHEDULE_GRIDS, SCHEDULES, SolverTimes, check_order, solver_times

ORDERS = (1, 2, 3)
VARIANTS = ("bh1", "bh2")


def expansion_integrals(h: float, n: int) -> list[float]:
    """g_0 .. g_n of the exact solution's expansion (recursion by parts)."""
    g = [-math.expm1(-h)]
    for k in range(1, n + 1):
        g.append(h ** k / math.factorial(k) - g[-1])
    return g


def order_coefficients(h: float, rs: list[float], variant: str) -> tuple[float, list[float]]:
    """B(h) and the a_j solving sum_j a_j r_j^(k-1) = k! g_k / (h^k B), k = 1 .. len(rs)."""
    B = h if variant == "bh1" else -math.expm1(-h)
    n = len(rs)
    if n == 1:
        return B, [0.5]
    g = expansion_integrals(h, n)
    R = [[r ** (k - 1) for r in rs] for k in range(1, n + 1)]
    rhs = [math.factorial(k) * g[k] / (h ** k * B) for k in range(1, n + 1)]
    return B, solve_small(R, rhs)


def solve_small(A: list[list[float]], b: list[float]) -> list[float]:
    """x with A x = b for the n <= 4 order conditions, Gaussian elimination with partial pivoting in
    Python floats (float64; no LAPACK call, whose first use costs a second, inside the timed loop)."""
    n = len(b)
    M = [list(row) + [v] for row, v in zip(A, b)]
    for c in range(n):
        piv = max(range(c, n), key=lambda r: abs(M[r][c]))
        M[c], M[piv] = M[piv], M[c]
        for r in range(c + 1, n):
            f = M[r][c] / M[c][c]
            M[r] = [v - f * w for v, w in zip(M[r], M[c])]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (M[r][n] - sum(M[r][k] * x[k] for k in range(r + 1, n))) / M[r][r]
    return x


def unified_update(times: SolverTimes, i: int, x: torch.Tensor, m: list[torch.Tensor], p_points: int,
                   variant: str, m_t: torch.Tensor | None = None) -> torch.Tensor:
    """UniP (m_t None) or UniC (m_t the data prediction at point i + 1) from point i to i + 1;
    x the state at point i, m = [m_0, m_1, ...] the data predictions at i, i - 1, ... (newest first);
    p_points: how many of them the update uses (its order as a predictor)."""
    h = times.h(i)
    ratio = times.sigma[i + 1] / times.sigma[i]
    a_t = times.alpha[i + 1]
    out = ratio * x + (a_t * -math.expm1(-h)) * m[0]
    rs = [(times.lam[i - j] - times.lam[i]) / h for j in range(1, p_points)]
    Ds = [(m[j] - m[0]) / rs[j - 1] for j in range(1, p_points)]
    if m_t is not None:
        rs, Ds = rs + [1.0], Ds + [m_t - m[0]]
    if not rs:
        return out
    B, a = order_coefficients(h, rs, variant)
    return out + (a_t * B) * sum(a_j * D_j for a_j, D_j in zip(a, Ds))


@SAMPLERS.register("unipc", constraints={"steps": positive, "order": one_of(*ORDERS), "variant": one_of(*VARIANTS),
                                         "schedule": one_of(*SCHEDULES)},
                   spec=SamplerSpec(grid=lambda p: SCHEDULE_GRIDS.get(p["schedule"]), noise="none",
                                    nfe=lambda p: (p["steps"], False)))
@torch.no_grad()
def unipc_sample(denoiser, x_T: torch.Tensor, *, generator: torch.Generator | None = None, steps: int = 20,
                 order: int = 2, variant: str = "bh2", corrector: bool = True, schedule: str = "ddpm",
                 lower_order_final: bool = True, class_labels: torch.Tensor | None = None) -> SampleResult:
    """UniPC: UniP-order predictor + UniC corrector (order + 1), data prediction, on `schedule`; NFE = steps."""
    check_order(order, ORDERS)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    times = solver_times(schedule, steps)
    x, history, x_before, p_before = x_T, [], None, 0
    with Stopwatch(x_T.device) as clock:
        for i in range(steps):
            m_i = data_prediction(denoiser, x, times, i, class_labels)
            if corrector and i > 0:                                   # UniC on the step just taken
                x = unified_update(times, i - 1, x_before, history, p_before, variant, m_t=m_i)
            history = [m_i] + history[:order - 1]
            p = min(order, i + 1, steps - i if lower_order_final else order)
            p = 1 if i == steps - 1 else p
            x_before, p_before = x, p
            x = unified_update(times, i, x, history, p, variant)       # UniP
    return SampleResult(x, nfe=steps, iterations=steps, converged=True, wall_s=clock.seconds)
