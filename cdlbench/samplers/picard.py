"""Parallel Picard sampler (ParaDiGMS, Shih et al. NeurIPS 2023; SPEC section 4).

Picard iteration on the whole trajectory X[0..T] (X[0] = x_T): over the window [b, e),
    delta_j = mean_step(X[j], t_j) - X[j]             (all j in one batched denoiser call)
    X_new[j+1] = X[b] + sum_{i=b..j} (delta_i + n_i)   (n_i: pre-sampled noise of step i)
    err_j = ||X_new[j+1] - X[j+1]||^2 / (d var_{j+1})   (var_{j+1}: noise variance of the next step;
                                                       var_T = 0: the last state never converges alone)
The window start moves past the first index where any sample has err > tol^2 (by 1..p);
newly exposed slots start from the last state. With tol -> 0 this is sequential sampling.
"""
from __future__ import annotations

import torch

from ..registry import SAMPLERS
from ..specs import SamplerSpec
from .base import SampleResult, Stopwatch, eps_batched, standard_noise
from ..constraints import one_of, positive
from .ddim import ddim_update
from .ddpm_grid import VARIANCES, ddpm_grid

# ddpm: ancestral mean plus pre-sampled noise; ddim: DDIM eta = 0 (ODE), no noise in the sums
DRIFTS = ("ddpm", "ddim")


def picard_step(X: torch.Tensor, b: int, e: int, drift_fn, step_noise: torch.Tensor,
                tol_var: torch.Tensor, tolerance: float) -> tuple[int, float]:
    """One Picard pass over window [b, e), updating X[b+1..e] in place.

    X [T+1, N, *shape]; drift_fn(xs, b, e) -> delta [e-b, N, *shape]; step_noise [T, N, *shape]
    (already scaled); tol_var [T] (tol_var[j] scales the error of step j's output X[j+1]).
    Returns (number of leading converged positions + 1, clipped to the window; max error).
    """
    delta = drift_fn(X[b:e], b, e) + step_noise[b:e]
    new = X[b] + torch.cumsum(delta, dim=0)                                  # X_new[b+1..e]
    d = X[0, 0].numel()
    sq = (new - X[b + 1:e + 1]).pow(2).flatten(2).sum(-1)                    # [W, N]
    var = tol_var[b:e].unsqueeze(1)
    err = torch.where(var > 0, sq / (d * var.clamp_min(1e-30)), float("inf"))    # [W, N]
    X[b + 1:e + 1] = new
    failing = (err > tolerance ** 2).any(dim=1)                              # [W]
    first_fail = int(torch.argmax(failing.int()).item()) if bool(failing.any()) else e - b
    # largest finite error (0.0 when none); errors are >= 0, so masking to 0 keeps the max
    # without the boolean-index copy that cost ~40% of the update at 1000 x 2000
    residual = torch.where(torch.isfinite(err), err, 0.0).amax()
    return min(1 + first_fail, e - b), float(residual)


def parallel_spec(**more) -> SamplerSpec:
    """The spec shared by the parallel samplers on the DDPM grid (picard and its accelerations)."""
    return SamplerSpec(grid="ddpm", noise="per_step", stochastic=lambda p: p["drift"] == "ddpm", parallel=True,
                       chunk_param="chunk_size", points_per_call=points_per_call, nfe=planned_nfe,
                       fixed_point=sequential_twin, exact_tolerance={"tolerance": 1e-6}, **more)


def points_per_call(params: dict, n: int) -> int:
    """Points one denoiser call takes without chunking: the whole window of n samples."""
    return n * min(int(params.get("window") or params["steps"]), params["steps"])


def planned_nfe(params: dict) -> tuple[int, bool]:
    """Upper bound of the evaluations per sample: every pass evaluates its window (at most T passes)."""
    T = params["steps"]
    p = min(int(params.get("window") or T), T)
    return (T * (T + 1) // 2 if p == T else T * p), True


def sequential_twin(params: dict) -> tuple[str, dict]:
    """The sequential sampler whose trajectory this sampler's fixed point is (same grid, same noise)."""
    if params["drift"] == "ddim":
        return "ddim", {"steps": params["steps"], "eta": 0.0}
    return "ddpm", {"steps": params["steps"], "variance": params["variance"]}


@SAMPLERS.register("picard", constraints={"steps": positive, "tolerance": positive, "window": positive,
                                          "max_iters": positive, "chunk_size": positive,
                                          "variance": one_of(*VARIANCES), "drift": one_of(*DRIFTS)},
                   spec=parallel_spec())
@torch.no_grad()
def picard_sample(denoiser, x_T: torch.Tensor, *, generator: torch.Generator | None = None,
                  noise: torch.Tensor | None = None, drift: str = "ddpm", steps: int = 1000,
                  variance: str = "posterior", tolerance: float = 0.1, window: int | None = None,
                  max_iters: int | None = None, chunk_size: int = 1 << 18, trace: bool = False,
                  class_labels: torch.Tensor | None = None) -> SampleResult:
    """Parallel (Picard) sampler with DDPM or DDIM (ODE) drift; window p defaults to all steps; chunk_size bounds the points per call;
    class_labels [N] for a class-conditional denoiser (tiled over the window)."""
    if drift not in DRIFTS:
        raise ValueError(f"drift must be one of {DRIFTS}, got {drift!r}")
    grid = ddpm_grid(steps).to(x_T.device, x_T.dtype)
    T = grid.steps
    p = T if window is None else min(int(window), T)
    max_iters = T if max_iters is None else int(max_iters)
    if drift == "ddpm":
        var = grid.variance(variance)
        xi = standard_noise(noise, T, x_T, generator)
        step_noise = var.sqrt().reshape(T, *([1] * x_T.ndim)) * xi
    else:                                            # ODE drift: no noise in the sums
        step_noise = x_T.new_zeros((T, *x_T.shape))
    # error scale of output X[j+1]: the variance of the noise the *next* step j+1 adds (ParaDiGMS,
    # Shih et al. 2023, Algorithm 1; docs/method.md section 4); 0 past the last step, so the final
    # state never counts as converged on its own
    tol_var = torch.cat([grid.posterior_var[1:], grid.posterior_var.new_zeros(1)])
    n = x_T.shape[0]

    def drift_fn(xs: torch.Tensor, b: int, e: int) -> torch.Tensor:
        w = e - b
        a = grid.logsnr[b:e].repeat_interleave(n)                       # rows are step-major: [w, n]
        labels = None if class_labels is None else class_labels.repeat(w)
        eps_hat = eps_batched(denoiser, xs.reshape(w * n, *x_T.shape[1:]), a, chunk_size, labels).reshape(xs.shape)
        if drift == "ddim":
            return ddim_update(grid, xs, eps_hat, slice(b, e)) - xs
        return grid.mean_step(xs, eps_hat, slice(b, e)) - xs

    X = x_T.unsqueeze(0).repeat(T + 1, *([1] * x_T.ndim))       # [T+1, N, *shape], all x_T
    b, iters, nfe = 0, 0, 0
    states, residuals = [], []
    with Stopwatch(x_T.device) as clock:
        while b < T and iters < max_iters:
            e = min(b + p, T)
            advance, residual = picard_step(X, b, e, drift_fn, step_noise, tol_var, tolerance)
            iters, nfe = iters + 1, nfe + (e - b)
            new_b = b + advance
            new_e = min(new_b + p, T)
            if new_e > e:                                           # newly exposed slots
                X[e + 1:new_e + 1] = X[e]
            b = new_b
            residuals.append(residual)
            if trace:
                states.append(X[T].clone())
    return SampleResult(X[T].clone(), nfe=nfe, iterations=iters, converged=b >= T, wall_s=clock.seconds,
                        trace=states if trace else None, residuals=residuals)
