"""Parallel Picard sampler (ParaDiGMS, Shih et al. NeurIPS 2023, Algorithm 1; docs/method.md section 4.4).

Picard iteration on the whole trajectory X[0..T] (X[0] = x_T): over the window [b, e),
    delta_j = mean_step(X[j], t_j) - X[j]             (all j in one batched denoiser call)
    X_new[j+1] = X[b] + sum_{i=b..j} (delta_i + n_i)   (n_i: pre-sampled noise of step i)
    err_j = ||X_new[j+1] - X[j+1]||^2 / (d var_{j+1})   (var_{j+1}: noise variance of the next step;
                                                       var_T = 0: the last state never converges alone)
The window start moves past the first index where any sample has err > tol^2 (by 1..p);
newly exposed slots start from the last state. With tol -> 0 this is sequential sampling.
The loop is the shared engine's (parallel_engine.py) with its base update rule, X_new = G(X).
"""
from __future__ import annotations

import torch

from ..registry import SAMPLERS
from .base import SampleResult
from .parallel_engine import (DRIFTS, INIT_NEUTRAL, PARALLEL_CONSTRAINTS, UpdateRule, advance_of,  # noqa: F401
                              first_failures, largest_finite, parallel_spec, picard_values, planned_nfe,
                              points_per_call, scaled_errors, sequential_twin, solve)


def picard_step(X: torch.Tensor, b: int, e: int, drift_fn, step_noise: torch.Tensor,
                tol_var: torch.Tensor, tolerance: float) -> tuple[int, float]:
    """One Picard pass over window [b, e), updating X[b+1..e] in place.

    X [T+1, N, *shape]; drift_fn(xs, b, e) -> delta [e-b, N, *shape]; step_noise [T, N, *shape]
    (already scaled); tol_var [T] (tol_var[j] scales the error of step j's output X[j+1]).
    Returns (number of leading converged positions + 1, clipped to the window; max error).
    """
    delta = drift_fn(X[b:e], b, e) + step_noise[b:e]
    new = picard_values(X[b], delta)                                          # X_new[b+1..e]
    err = scaled_errors(new, X[b + 1:e + 1], tol_var[b:e])                    # [W, N]
    X[b + 1:e + 1] = new
    return advance_of(first_failures(err, tolerance), e - b), largest_finite(err)


@SAMPLERS.register("picard", constraints=PARALLEL_CONSTRAINTS, spec=parallel_spec(), neutral=INIT_NEUTRAL)
@torch.no_grad()
def picard_sample(denoiser, x_T: torch.Tensor, *, generator: torch.Generator | None = None,
                  noise: torch.Tensor | None = None, drift: str = "ddpm", steps: int = 1000,
                  variance: str = "posterior", tolerance: float = 0.1, window: int | None = None,
                  max_iters: int | None = None, chunk_size: int = 1 << 18, trace: bool = False,
                  class_labels: torch.Tensor | None = None, init: str = "x_T", warmup_steps: int = 1,
                  coarse_steps: int = 10) -> SampleResult:
    """Parallel (Picard) sampler with DDPM or DDIM (ODE) drift; window p defaults to all steps; chunk_size bounds the points per call;
    class_labels [N] for a class-conditional denoiser (tiled over the window); init x_T | frozen_x0 | coarse
    (warm_start.py; warmup_steps / coarse_steps sequential calls, counted as rounds and NFE)."""
    return solve(denoiser, x_T, UpdateRule(), generator=generator, noise=noise, drift=drift, steps=steps,
                 variance=variance, tolerance=tolerance, window=window, max_iters=max_iters,
                 chunk_size=chunk_size, trace=trace, class_labels=class_labels, init=init,
                 warmup_steps=warmup_steps, coarse_steps=coarse_steps)
