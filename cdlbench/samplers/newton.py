"""Newton's method on the trajectory: DEER (Lim et al. ICLR 2024), quasi-DEER and ELK (Gonzalez et
al. NeurIPS 2024); docs/method.md section 4.5.

Linearise each step map f_j of system (4.5a) at the current iterate X (A_j = d f_j / d x at X[j]).
With the corrections D[s] = X_new[b+s] - X[b+s] over the window (D[0] = 0: X[b] is fixed) and the
one-step defects c_s = f_j(X[j]) + n_j - X[j+1] (j = b + s), the Newton step is the linear recurrence

    D[s+1] = A_j D[s] + c_s,        s = 0..W-1                                           (4.5e)

- jacobian `exact` (DEER): A_j = alpha_j I + gamma_j J_j with J_j = d eps_hat / d x from d
  forward-mode JVPs per point (torch.func.jvp vmapped over the basis), in the same batched
  call as eps_hat, so no extra round;
- `diagonal` (quasi-DEER): A_j = alpha_j + gamma_j diag(J_j), the diagonal taken from the same
  d JVPs (at this dimension the products cost as much as `exact`; what changes is the solve);
- `identity`: A_j = I, (4.5e) telescopes to Picard's cumulative sum: Picard exactly, no JVPs.

(4.5e) is solved by a parallel associative scan (Hillis-Steele doubling over the affine maps
(A, c): ceil(log2 W) levels of batched products, counted as `scan_depth`); it calls no denoiser.
`damping` lam > 0 (ELK): the Levenberg-Marquardt step minimises
    sum_s ||D[s+1] - A_j D[s] - c_s||^2 + lam sum_s ||D[s+1]||^2                         (4.5f)
a Kalman smoothing problem (unit dynamics noise, observations D = 0 with noise 1/lam; the first
transition is exact, X[b+1] being computable), solved by a sequential forward filter and backward
Rauch-Tung-Striebel pass (2 W levels); it shrinks steps far from the solution. The engine's
safeguard keeps the plain Picard value at converged slots and at the first unconverged one.
Figures: `jvp` (Jacobian-vector products per sample batch: d per evaluated point), `scan_depth`.
The denoiser must be differentiable: under Denoiser.accelerated(inference_mode=True) a network
raises a clear error, but an analytic function would silently give zero Jacobians.
"""
from __future__ import annotations

import torch

from ..constraints import non_negative, one_of
from ..registry import SAMPLERS
from .base import SampleResult
from .parallel_engine import INIT_NEUTRAL, PARALLEL_CONSTRAINTS, Pass, UpdateRule, parallel_spec, safeguarded, solve

JACOBIANS = ("exact", "diagonal", "identity")


def _apply(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A v for stacks of matrices [..., D, D] or of diagonals [..., D]; v [..., D]."""
    return (A @ v.unsqueeze(-1)).squeeze(-1) if A.ndim == v.ndim + 1 else A * v


def affine_scan(A: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(4.5e) by a Hillis-Steele inclusive scan: D[s+1] for s = 0..W-1 with D[0] = 0.
    A [W, N, D, D] (matrices) or [W, N, D] (diagonals); c [W, N, D]. Level k composes element s
    with element s - 2^k: (A_s, c_s) o (A_s', c_s') = (A_s A_s', A_s c_s' + c_s); after the
    last level element s holds the whole composition 0..s applied to D[0] = 0.
    Returns (D[1..W] [W, N, D], number of levels)."""
    matrices = A.ndim == c.ndim + 1
    W, off, levels = c.shape[0], 1, 0
    while off < W:
        c = torch.cat([c[:off], _apply(A[off:], c[:-off]) + c[off:]])
        if 2 * off < W:                                             # the maps are needed for another level
            A = torch.cat([A[:off], A[off:] @ A[:-off] if matrices else A[off:] * A[:-off]])
        off, levels = 2 * off, levels + 1
    return c, levels


def damped_scan(A: torch.Tensor, c: torch.Tensor, lam: float) -> tuple[torch.Tensor, int]:
    """(4.5f) by a Kalman filter and a Rauch-Tung-Striebel smoother over the window (sequential in
    the slots, batched over samples). A [W, N, D, D] or [W, N, D]; c [W, N, D]. Returns (D[1..W], 2 W).

    Model: D[s+1] = A_s D[s] + c_s + w_s, w_s ~ N(0, I) (w_0 = 0: the first transition is exact),
    observed values 0 with noise N(0, I / lam); the smoothed means minimise (4.5f)."""
    W, n, d = c.shape
    if A.ndim == 4:
        eye = torch.eye(d, dtype=c.dtype, device=c.device).expand(n, d, d)

        def cov(As, P):                                             # A P A^T
            return As @ P @ As.transpose(-1, -2)

        def gain(P_pred):                                           # lam P (I + lam P)^-1 (the two commute)
            return torch.linalg.solve(eye + lam * P_pred, lam * P_pred)

        def smoother_gain(P, As, P_next):                           # P A^T P_next^-1 (P, P_next symmetric)
            return torch.linalg.solve(P_next, As @ P).transpose(-1, -2)

        def mul(K, P):
            return K @ P
    else:
        eye = c.new_ones(n, d)

        def cov(As, P):
            return As * P * As

        def gain(P_pred):
            return lam * P_pred / (1.0 + lam * P_pred)

        def smoother_gain(P, As, P_next):
            return P * As / P_next

        def mul(K, P):
            return K * P
    m, P = c.new_zeros(n, d), torch.zeros_like(eye)
    filtered, predicted = [], []
    for s in range(W):                                              # forward filter
        m_pred = _apply(A[s], m) + c[s]
        P_pred = cov(A[s], P) + (eye if s > 0 else 0.0)
        K = gain(P_pred)
        m, P = m_pred - _apply(K, m_pred), P_pred - mul(K, P_pred)
        filtered.append((m, P))
        predicted.append((m_pred, P_pred))
    out = [filtered[-1][0]]
    for s in range(W - 2, -1, -1):                                  # backward smoother
        m_s, P_s = filtered[s]
        m_next, P_next = predicted[s + 1]                          # P_next >= I: invertible
        G = smoother_gain(P_s, A[s + 1], P_next)
        out.append(m_s + _apply(G, out[-1] - m_next))
    return torch.stack(out[::-1]), 2 * W


class NewtonUpdate(UpdateRule):
    """(4.5e) or (4.5f) on the window, then the engine's safeguard."""

    def __init__(self, jacobian: str, damping: float):
        if jacobian not in JACOBIANS:
            raise ValueError(f"jacobian must be one of {JACOBIANS}, got {jacobian!r}")
        self.kind, self.damping = jacobian, float(damping)
        self.jacobian = None if jacobian == "identity" else jacobian
        self.jvp = self.depth = 0

    def start(self, problem, X: torch.Tensor) -> None:
        self.alpha, self.gamma = problem.step_coefficients()               # f_j = alpha_j x + gamma_j eps_hat

    def __call__(self, p: Pass) -> torch.Tensor:
        self.jvp += p.products
        if self.kind == "identity" and self.damping == 0:
            return p.picard                                                  # (4.5e) with A = I: Picard
        b, e = p.b, p.e
        W, n = e - b, p.picard.shape[1]
        old = p.X[b + 1:e + 1]
        c = ((p.X[b:e] + p.delta) - old).reshape(W, n, -1)                   # defects c_s, [W, N, D]
        alpha = self.alpha[b:e].view(W, 1, 1)
        gamma = self.gamma[b:e].view(W, 1, 1)
        if self.kind == "exact":
            eye = torch.eye(c.shape[-1], dtype=c.dtype, device=c.device)
            A = alpha.unsqueeze(-1) * eye + gamma.unsqueeze(-1) * p.jac        # [W, N, D, D]
        elif self.kind == "diagonal":
            A = alpha + gamma * p.jac                                         # [W, N, D]
        else:
            A = torch.ones_like(c)
        D, levels = damped_scan(A, c, self.damping) if self.damping > 0 else affine_scan(A, c)
        self.depth += levels
        return safeguarded(p, old + D.reshape(old.shape))

    def figures(self) -> dict:
        return {"jvp": self.jvp, "scan_depth": self.depth}


@SAMPLERS.register("newton", constraints={**PARALLEL_CONSTRAINTS, "jacobian": one_of(*JACOBIANS),
                                          "damping": non_negative},
                   spec=parallel_spec(extra_figures=(("jvp", "products"), ("scan_depth", "levels"))),
                   neutral=INIT_NEUTRAL)
@torch.no_grad()
def newton_sample(denoiser, x_T: torch.Tensor, *, generator: torch.Generator | None = None,
                  noise: torch.Tensor | None = None, drift: str = "ddpm", steps: int = 1000,
                  variance: str = "posterior", tolerance: float = 0.1, window: int | None = None,
                  max_iters: int | None = None, chunk_size: int = 1 << 18, trace: bool = False,
                  class_labels: torch.Tensor | None = None, init: str = "x_T", warmup_steps: int = 1,
                  coarse_steps: int = 10, jacobian: str = "exact", damping: float = 0.0) -> SampleResult:
    """Parallel Newton sampler (DEER, Lim et al. 2024; quasi-DEER and ELK, Gonzalez et al. 2024): each pass
    linearises every step at the current trajectory; jacobian exact | diagonal | identity (= picard); damping
    (ELK, 0 = none); the Jacobian-vector products are counted in result.extra['jvp']; other parameters as picard."""
    return solve(denoiser, x_T, NewtonUpdate(jacobian, damping), generator=generator, noise=noise, drift=drift,
                 steps=steps, variance=variance, tolerance=tolerance, window=window, max_iters=max_iters,
                 chunk_size=chunk_size, trace=trace, class_labels=class_labels, init=init,
                 warmup_steps=warmup_steps, coarse_steps=coarse_steps)

