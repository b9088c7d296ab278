"""The engine shared by the parallel samplers on the DDPM grid (docs/method.md sections 4.4-4.5).

The trajectory X[0..T] (X[0] = x_T) of a sequential sampler solves the triangular system

    X[j+1] = f_j(X[j]) + n_j,      f_j(x) = alpha_j x + gamma_j eps_hat(x, a_j),     j = 0..T-1   (4.5a)

with f_j the DDPM posterior-mean step (Ho et al. 2020, eq. 11) or the DDIM eta = 0 step (Song et al.
2021, eq. 12) and n_j the pre-sampled, already scaled noise of step j (0 for the DDIM drift). Both
steps are linear in (x, eps_hat), so alpha_j and gamma_j are read off the step functions themselves.

Every sampler built on this engine (picard, taa, newton) runs the same loop and differs only in
its `UpdateRule`, the map from one pass's evaluations to the next iterate of the window:

- window [b, e), e = min(b + p, T); all of X[b..e-1] in one batched (chunked) denoiser call,
  plus, when the rule asks, the denoiser's Jacobian-vector products in that same call;
- the Picard increments delta_j = (f_j(X[j]) - X[j]) + n_j and the fixed-point map's values
  G[j+1] = X[b] + sum_{i=b..j} delta_i (ParaDiGMS, Shih et al. 2023, Algorithm 1);
- the convergence test on the current iterate: err_j = ||G[j+1] - X[j+1]||^2 / (d var_{j+1}),
  var_{j+1} the noise variance of the next step (var_T = 0); the window start moves past the first
  slot where any sample has err > tol^2 (by 1..p); newly exposed slots start from the last state;
- the rule's new values are written to X[b+1..e]; statistics: rounds (warm-up rounds plus passes),
  NFE (denoiser evaluations per sample batch), wall-clock, trace of X[T], residuals, rule figures.

The starting trajectory comes from warm_start.py (init: x_T | frozen_x0 | coarse).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..constraints import one_of, positive
from ..specs import SamplerSpec
from .base import SampleResult, Stopwatch, eps_batched, standard_noise
from .ddim import ddim_update
from .ddpm_grid import VARIANCES, DDPMGrid, ddpm_grid
from .warm_start import INITS, anchor_steps, exact_prefix, initial_trajectory

# ddpm: ancestral mean plus pre-sampled noise; ddim: DDIM eta = 0 (ODE), no noise in the sums
DRIFTS = ("ddpm", "ddim")

#: parameter checks of every sampler on this engine
PARALLEL_CONSTRAINTS = {"steps": positive, "tolerance": positive, "window": positive, "max_iters": positive,
                        "chunk_size": positive, "variance": one_of(*VARIANCES), "drift": one_of(*DRIFTS),
                        "init": one_of(*INITS), "warmup_steps": positive, "coarse_steps": positive}
#: values of the init parameters at which a sampler behaves as before they existed (cache keys)
INIT_NEUTRAL = {"init": "x_T", "warmup_steps": 1, "coarse_steps": 10}


# ------------------------------------------------------------------ spec (what the samplers declare)
def parallel_spec(**more) -> SamplerSpec:
    """The spec shared by the parallel samplers on the DDPM grid (picard and its accelerations)."""
    return SamplerSpec(grid="ddpm", noise="per_step", stochastic=lambda p: p["drift"] == "ddpm", parallel=True,
                       chunk_param="chunk_size", points_per_call=points_per_call, nfe=planned_nfe,
                       fixed_point=sequential_twin, exact_tolerance={"tolerance": 1e-6}, **more)


def points_per_call(params: dict, n: int) -> int:
    """Points one denoiser call takes without chunking: the whole window of n samples."""
    return n * min(int(params.get("window") or params["steps"]), params["steps"])


def planned_nfe(params: dict) -> tuple[int, bool]:
    """Upper bound of the evaluations per sample: the warm-up calls, then every pass evaluates
    its window (at most T passes)."""
    T = params["steps"]
    p = min(int(params.get("window") or T), T)
    warm = len(anchor_steps(params.get("init", "x_T"), T, params.get("warmup_steps", 1),
                            params.get("coarse_steps", 10)))
    return warm + (T * (T + 1) // 2 if p == T else T * p), True


def sequential_twin(params: dict) -> tuple[str, dict]:
    """The sequential sampler whose trajectory this sampler's fixed point is (same grid, same noise)."""
    if params["drift"] == "ddim":
        return "ddim", {"steps": params["steps"], "eta": 0.0}
    return "ddpm", {"steps": params["steps"], "variance": params["variance"]}


# ------------------------------------------------------------------ pure pieces of one pass
def picard_values(start: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """G[j+1] = X[b] + sum_{i=b..j} delta_i (ParaDiGMS, Algorithm 1): start [N, *shape], delta [W, N, *shape]."""
    return start + torch.cumsum(delta, dim=0)


def scaled_errors(new: torch.Tensor, old: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """err [W, N] = ||new - old||^2 / (d var) per slot and sample; var [W] (0: infinite error,
    the state never counts as converged on its own)."""
    d = new[0, 0].numel()
    sq = (new - old).pow(2).flatten(2).sum(-1)                                # [W, N]
    var = var.unsqueeze(1)
    return torch.where(var > 0, sq / (d * var.clamp_min(1e-30)), float("inf"))


def first_failures(err: torch.Tensor, tolerance: float) -> torch.Tensor:
    """[N]: each sample's first slot with err > tol^2 (W when none)."""
    failing = err > tolerance ** 2                                            # [W, N]
    first = torch.argmax(failing.int(), dim=0)                                # first maximum: first failure
    return torch.where(failing.any(dim=0), first, err.shape[0])


def advance_of(first: torch.Tensor, width: int) -> int:
    """How far the window start moves: past the first slot where any sample fails, 1..width."""
    return min(1 + int(first.min().item()), width)


def largest_finite(err: torch.Tensor) -> float:
    """The largest finite error (0.0 when none); errors are >= 0, so masking to 0 keeps the max
    without the boolean-index copy that cost ~40% of the update at 1000 x 2000."""
    return float(torch.where(torch.isfinite(err), err, 0.0).amax())


def safeguarded(p: "Pass", new: torch.Tensor) -> torch.Tensor:
    """The plain Picard value at each sample's converged slots and at its first unconverged one
    (Tang et al. 2024's safeguard), and wherever the rule's value is not finite; the rule's value
    elsewhere. A state that the window start may move onto is then always one exact step from
    converged predecessors, and an overflowing extrapolation cannot leave inf or NaN behind (a NaN
    error would never count as failing)."""
    W, n = new.shape[:2]
    slot = torch.arange(W, device=new.device).view(W, 1)
    keep = (slot <= p.first.view(1, n)).view(W, n, *([1] * (new.ndim - 2)))
    return torch.where(keep | ~torch.isfinite(new), p.picard, new)


# ------------------------------------------------------------------ the system and one pass
@dataclass
class Problem:
    """System (4.5a) on one grid for a batch of N samples."""

    denoiser: object
    grid: DDPMGrid
    drift: str
    step_noise: torch.Tensor         # [T, N, *shape], n_j
    tol_var: torch.Tensor            # [T], var_{j+1} (0 for the last step)
    labels: torch.Tensor | None      # [N]
    chunk_size: int

    @property
    def steps(self) -> int:
        return self.grid.steps

    @property
    def n(self) -> int:
        return self.step_noise.shape[1]

    @property
    def dim(self) -> int:
        return int(math.prod(self.step_noise.shape[2:]))

    def step(self, xs: torch.Tensor, eps_hat: torch.Tensor, j) -> torch.Tensor:
        """f_j without noise at steps j (an index, or a slice over xs's leading dimension)."""
        if self.drift == "ddim":
            return ddim_update(self.grid, xs, eps_hat, j)
        return self.grid.mean_step(xs, eps_hat, j)

    def step_coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha [T], gamma [T]) with f_j(x) = alpha_j x + gamma_j eps_hat (both steps are linear)."""
        one, zero = self.tol_var.new_ones(self.steps), self.tol_var.new_zeros(self.steps)
        every = slice(0, self.steps)
        return self.step(one, zero, every), self.step(zero, one, every)

    def _rows(self, xs: torch.Tensor, b: int, e: int):
        """Window [e-b, N, *shape] as step-major rows, with their log-SNRs and labels."""
        w = e - b
        a = self.grid.logsnr[b:e].repeat_interleave(self.n)
        labels = None if self.labels is None else self.labels.repeat(w)
        return xs.reshape(w * self.n, *xs.shape[2:]), a, labels

    def eps(self, xs: torch.Tensor, b: int, e: int) -> torch.Tensor:
        """eps_hat at every slot of the window, one batched call (chunked): [e-b, N, *shape]."""
        z, a, labels = self._rows(xs, b, e)
        return eps_batched(self.denoiser, z, a, self.chunk_size, labels).reshape(xs.shape)

    def eps_jacobian(self, xs: torch.Tensor, b: int, e: int, diagonal: bool):
        """eps_hat and its Jacobian d eps_hat / d x at every slot, in the same batched call:
        ([e-b, N, *shape], [e-b, N, d, d] or its diagonal [e-b, N, d]). One forward-mode JVP per
        data dimension and point (torch.func.jvp, vmapped over the d basis tangents)."""
        z, a, labels = self._rows(xs, b, e)
        eps, jac = eps_and_jacobian(self.denoiser, z, a, self.chunk_size, labels, diagonal)
        return eps.reshape(xs.shape), jac.reshape(e - b, self.n, *jac.shape[1:])


def eps_and_jacobian(denoiser, z: torch.Tensor, a: torch.Tensor, chunk_size: int,
                     labels: torch.Tensor | None, diagonal: bool):
    """eps_hat(z) [M, *shape] and J [M, d, d] (J[m, i, k] = d eps_i / d z_k; diagonal: [M, d]).
    Each call holds (1 + d) x rows points (primal and d tangents), so rows = chunk_size // (1 + d)."""
    from torch.func import jvp, vmap

    shape = z.shape[1:]
    d = int(math.prod(shape))
    basis = torch.eye(d, dtype=z.dtype, device=z.device).reshape(d, 1, *shape)
    rows = max(1, chunk_size // (1 + d))
    eps_parts, jac_parts = [], []
    for i in range(0, z.shape[0], rows):
        zc, ac = z[i:i + rows], a[i:i + rows]
        lc = None if labels is None else labels[i:i + rows]

        def one_tangent(v, zc=zc, ac=ac, lc=lc):
            return jvp(lambda x: denoiser.eps(x, ac, lc), (zc,), (v,))

        try:
            primal, tangents = vmap(one_tangent)(basis.expand(d, zc.shape[0], *shape))   # [d, m, *shape] each
        except RuntimeError as exc:
            if "nference" in str(exc):
                raise RuntimeError("the Jacobian of the denoiser is needed (newton), but the denoiser runs "
                                   "under torch.inference_mode; sample without inference-mode acceleration") from exc
            raise
        jac = tangents.flatten(2).permute(1, 2, 0)                          # [m, d_out, d_in]
        eps_parts.append(primal[0])
        jac_parts.append(jac.diagonal(dim1=1, dim2=2) if diagonal else jac)
    return torch.cat(eps_parts), torch.cat(jac_parts)


def build_problem(denoiser, x_T: torch.Tensor, *, drift: str, steps: int, variance: str,
                  noise: torch.Tensor | None, generator: torch.Generator | None, chunk_size: int,
                  class_labels: torch.Tensor | None) -> Problem:
    if drift not in DRIFTS:
        raise ValueError(f"drift must be one of {DRIFTS}, got {drift!r}")
    grid = ddpm_grid(steps).to(x_T.device, x_T.dtype)
    T = grid.steps
    if drift == "ddpm":
        var = grid.variance(variance)
        xi = standard_noise(noise, T, x_T, generator)
        step_noise = var.sqrt().reshape(T, *([1] * x_T.ndim)) * xi
    else:                                            # ODE drift: no noise in the sums
        step_noise = x_T.new_zeros((T, *x_T.shape))
    # error scale of output X[j+1]: the variance of the noise the *next* step j+1 adds (ParaDiGMS,
    # Shih et al. 2023, Algorithm 1; docs/method.md section 4.4); 0 past the last step, so the final
    # state never counts as converged on its own
    tol_var = torch.cat([grid.posterior_var[1:], grid.posterior_var.new_zeros(1)])
    return Problem(denoiser, grid, drift, step_noise, tol_var, class_labels, int(chunk_size))


@dataclass
class Pass:
    """What one pass over the window [b, e) computed, for the update rule (W = e - b)."""

    b: int
    e: int
    X: torch.Tensor            # [T+1, N, *shape], the current iterate (X[b] fixed)
    delta: torch.Tensor        # [W, N, *shape], delta_j = (f_j(X[j]) - X[j]) + n_j
    picard: torch.Tensor       # [W, N, *shape], G[j+1]: the fixed-point map's values of X[b+1..e]
    first: torch.Tensor        # [N], each sample's first failing slot (W when none)
    jac: torch.Tensor | None   # [W, N, d, d] or [W, N, d]: d eps_hat / d x at X[b..e-1], if asked
    products: int              # Jacobian-vector products this pass spent per sample (d per point)


class UpdateRule:
    """How a sampler turns one pass into the next iterate of the window. The base rule is Picard
    (ParaDiGMS, Shih et al. 2023, Algorithm 1): X[b+1..e] <- G. `jacobian` (None | "exact" |
    "diagonal"): what the pass must evaluate besides eps_hat; `figures()`: the rule's per-cell counts."""

    jacobian: str | None = None

    def start(self, problem: Problem, X: torch.Tensor) -> None:
        """Called once with the starting trajectory, before the first pass."""

    def __call__(self, p: Pass) -> torch.Tensor:
        return p.picard

    def figures(self) -> dict:
        return {}


def solve(denoiser, x_T: torch.Tensor, rule: UpdateRule, *, generator: torch.Generator | None,
          noise: torch.Tensor | None, drift: str, steps: int, variance: str, tolerance: float,
          window: int | None, max_iters: int | None, chunk_size: int, trace: bool,
          class_labels: torch.Tensor | None, init: str, warmup_steps: int, coarse_steps: int) -> SampleResult:
    """Run a parallel sampler: warm start, then passes over the sliding window until every state
    has converged or max_iters rounds (warm-up rounds included; the warm-up itself always runs in
    full) have run. Default max_iters: enough to finish (each pass advances at least one state)."""
    problem = build_problem(denoiser, x_T, drift=drift, steps=steps, variance=variance, noise=noise,
                            generator=generator, chunk_size=chunk_size, class_labels=class_labels)
    T = problem.steps
    p = T if window is None else min(int(window), T)
    anchors = anchor_steps(init, T, warmup_steps, coarse_steps)
    b = exact_prefix(anchors)                         # X[0..b] exact after the warm-up
    max_iters = len(anchors) + (T - b) if max_iters is None else int(max_iters)
    states, residuals = [], []
    with Stopwatch(x_T.device) as clock:
        X, predictions = initial_trajectory(problem, x_T, anchors)       # [T+1, N, *shape]
        iters = nfe = len(anchors)                                        # one sequential round per call
        if trace:
            states.extend(x0.clone() for x0 in predictions)              # X[T] of the guess after each round
        rule.start(problem, X)
        while b < T and iters < max_iters:
            e = min(b + p, T)
            advance, residual = one_pass(problem, X, b, e, rule, tolerance)
            iters, nfe = iters + 1, nfe + (e - b)
            new_b = b + advance
            new_e = min(new_b + p, T)
            if new_e > e:                                                 # newly exposed slots
                X[e + 1:new_e + 1] = X[e]
            b = new_b
            residuals.append(residual)
            if trace:
                states.append(X[T].clone())
    return SampleResult(X[T].clone(), nfe=nfe, iterations=iters, converged=b >= T, wall_s=clock.seconds,
                        trace=states if trace else None, residuals=residuals, extra=rule.figures())


def one_pass(problem: Problem, X: torch.Tensor, b: int, e: int, rule: UpdateRule,
             tolerance: float) -> tuple[int, float]:
    """Evaluate window [b, e), test convergence, write the rule's update to X[b+1..e] in place.
    Returns (how far the window start moves, largest finite error)."""
    xs = X[b:e]
    jac, products = None, 0
    if rule.jacobian is None:
        eps_hat = problem.eps(xs, b, e)
    else:
        eps_hat, jac = problem.eps_jacobian(xs, b, e, diagonal=rule.jacobian == "diagonal")
        products = (e - b) * problem.dim
    delta = (problem.step(xs, eps_hat, slice(b, e)) - xs) + problem.step_noise[b:e]
    picard = picard_values(X[b], delta)
    err = scaled_errors(picard, X[b + 1:e + 1], problem.tol_var[b:e])
    first = first_failures(err, tolerance)
    X[b + 1:e + 1] = rule(Pass(b, e, X, delta, picard, first, jac, products))
    return advance_of(first, e - b), largest_finite(err)
