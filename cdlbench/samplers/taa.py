"""Triangular Anderson acceleration of the Picard sampler (ParaTAA; Tang et al. ICML 2024,
"Accelerating Parallel Sampling of Diffusion Models"; docs/method.md section 4.5).

Anderson acceleration (Anderson 1965; the multisecant "type II" form) of the fixed-point map G
of a Picard pass. With the current iterate x = X[b+1..e], its map value g = G(x) and residual
r = g - x, and the m - 1 previous iterates x^(c), g^(c) still in the history (c = 1..m-1), the
differences to the current ones are

    dX_c = x - x^(c),   dG_c = g - g^(c),   dR_c = dG_c - dX_c                           (4.5b)

Triangular: the update of state j only uses states upstream of it, so each slot s of the window
(state X[b+1+s]) gets its own mixing coefficients from the regularised least-squares problem over
the slots s' <= s,

    gamma_s = argmin_gamma  sum_{s' <= s} || r[s'] - sum_c gamma_c dR_c[s'] ||^2 + lam_s ||gamma||^2,
    lam_s = regularization * (mean_c sum_{s' <= s} ||dR_c[s']||^2),                     (4.5c)

solved per sample through prefix sums (cumsum over slots) of the (m-1) x (m-1) Gram matrices and
one batched solve, and the state is mixed as

    X_new[b+1+s] = g[s] - sum_c gamma_{s,c} dG_c[s].                                     (4.5d)

Safeguard (Tang et al. 2024): the plain Picard value g for each sample's converged slots and its
first unconverged one (parallel_engine.safeguarded). A slot's history holds only the passes it
was in the window for (newly exposed slots start with none). `history` m = 1 keeps no previous
iterate: the update is Picard's, pass for pass. Same NFE per pass as Picard; the extra work is
the small solves. The convergence test is the engine's (the Picard residual of the iterate).
"""
from __future__ import annotations

import torch

from ..constraints import positive
from ..registry import SAMPLERS
from .base import SampleResult
from .parallel_engine import INIT_NEUTRAL, PARALLEL_CONSTRAINTS, Pass, UpdateRule, parallel_spec, safeguarded, solve


def anderson_coefficients(dR: torch.Tensor, r: torch.Tensor, valid: torch.Tensor,
                          regularization: float) -> torch.Tensor:
    """(4.5c) for every slot and sample: dR [C, W, N, D], r [W, N, D], valid [W] (how many of the
    C columns slot s may use: the newest ones). Returns gamma [W, N, C] (0 for unusable columns)."""
    C = dR.shape[0]
    gram = torch.cumsum(torch.einsum("cwnd,kwnd->wnck", dR, dR), dim=0)          # [W, N, C, C], upstream sums
    rhs = torch.cumsum(torch.einsum("cwnd,wnd->wnc", dR, r), dim=0)              # [W, N, C]
    use = (torch.arange(C, device=dR.device).view(1, C) < valid.view(-1, 1)).to(dR.dtype)   # [W, C]
    use = use.view(-1, 1, C)                                                      # [W, 1, C]
    eye = torch.eye(C, dtype=dR.dtype, device=dR.device)
    gram = gram * use.unsqueeze(-1) * use.unsqueeze(-2)
    scale = gram.diagonal(dim1=-2, dim2=-1).sum(-1, keepdim=True) / valid.clamp_min(1).view(-1, 1, 1)
    # ridge relative to the columns' mean squared norm, floored at C * machine epsilon so that
    # collinear differences stay solvable; the absolute floor covers all-zero differences
    lam = (regularization + C * torch.finfo(dR.dtype).eps) * scale + torch.finfo(dR.dtype).tiny ** 0.5
    system = gram + (lam * use + (1.0 - use)).unsqueeze(-1) * eye                 # unusable columns: gamma = 0
    return torch.linalg.solve(system, (rhs * use).unsqueeze(-1)).squeeze(-1)


class TriangularAnderson(UpdateRule):
    """(4.5b-d) with the last `history` iterates of every state (ring buffers over the trajectory).

    The map G of a pass depends on where the window starts (X[b] is a constant), so the history
    keeps each state's iterate x^(c)[j] and the increment delta^(c)_{j-1} that produced it, and
    rebuilds the previous map values for the current window, G(x^(c))[j] = X[b] + delta_b(X[b]) +
    sum_{i=b+1}^{j-1} delta^(c)_i: the secant pairs then belong to the map being solved."""

    def __init__(self, history: int, regularization: float):
        self.m, self.regularization = int(history), float(regularization)

    def start(self, problem, X: torch.Tensor) -> None:
        if self.m > 1:
            self.xs = X.new_zeros((self.m - 1, *X.shape))       # previous iterates x^(c)[j], newest first
            self.ds = X.new_zeros((self.m - 1, *X.shape))       # increments delta^(c)_{j-1} that made them
            self.age = torch.zeros(X.shape[0], dtype=torch.long, device=X.device)   # passes as a variable

    def __call__(self, p: Pass) -> torch.Tensor:
        if self.m == 1:
            return p.picard
        b, e = p.b, p.e
        x, g = p.X[b + 1:e + 1], p.picard                                         # [W, N, *shape]
        valid = self.age[b + 1:e + 1].clamp(max=self.m - 1)                       # non-increasing over slots
        new = g
        if int(valid[0]) > 0:
            flat = lambda t: t.flatten(start_dim=t.ndim - x.ndim + 2)            # noqa: E731  [..., W, N, D]
            dX = x.unsqueeze(0) - self.xs[:, b + 1:e + 1]                         # (4.5b)
            d_inc = p.delta.unsqueeze(0) - self.ds[:, b + 1:e + 1]
            d_inc[:, 0] = 0.0                                                     # delta_b(X[b]): X[b] is fixed
            dG = torch.cumsum(d_inc, dim=1)
            gamma = anderson_coefficients(flat(dG - dX), flat(g - x), valid, self.regularization)
            mixed = flat(g) - torch.einsum("wnc,cwnd->wnd", gamma, flat(dG))    # (4.5d)
            new = safeguarded(p, mixed.reshape(g.shape))
        self.xs[:, b + 1:e + 1] = torch.cat([x.unsqueeze(0), self.xs[:-1, b + 1:e + 1]])
        self.ds[:, b + 1:e + 1] = torch.cat([p.delta.unsqueeze(0), self.ds[:-1, b + 1:e + 1]])
        self.age[b + 1:e + 1] += 1
        return new


@SAMPLERS.register("taa", constraints={**PARALLEL_CONSTRAINTS, "history": positive, "regularization": positive},
                   spec=parallel_spec(), neutral=INIT_NEUTRAL)
@torch.no_grad()
def taa_sample(denoiser, x_T: torch.Tensor, *, generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None, drift: str = "ddpm", steps: int = 1000,
               variance: str = "posterior", tolerance: float = 0.1, window: int | None = None,
               max_iters: int | None = None, chunk_size: int = 1 << 18, trace: bool = False,
               class_labels: torch.Tensor | None = None, init: str = "x_T", warmup_steps: int = 1,
               coarse_steps: int = 10, history: int = 3, regularization: float = 1e-3) -> SampleResult:
    """Parallel sampler with triangular Anderson acceleration (ParaTAA, Tang et al. 2024) of the Picard map;
    history m iterates (m = 1: Picard), Tikhonov regularization relative to the residual differences;
    window, tolerance, init and the other parameters as picard."""
    return solve(denoiser, x_T, TriangularAnderson(history, regularization), generator=generator, noise=noise,
                 drift=drift, steps=steps, variance=variance, tolerance=tolerance, window=window,
                 max_iters=max_iters, chunk_size=chunk_size, trace=trace, class_labels=class_labels, init=init,
                 warmup_steps=warmup_steps, coarse_steps=coarse_steps)
