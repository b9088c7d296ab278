"""Starting trajectories of the parallel samplers (docs/method.md section 4.5, "Warm starts").

- `x_T`: every state X[0..T] starts at x_T (ParaDiGMS, Shih et al. 2023, Algorithm 1).
- `frozen_x0` (after ParaSolver, Lu et al. ICLR 2025, who start from a better initial trajectory):
  `warmup_steps` K sequential steps X[1..K] (exact), then the rest of the trajectory filled by
  steps that reuse the last clean-data prediction x0_hat, with no further denoiser calls.
- `coarse` (in the spirit of SRDS, Selvam et al. NeurIPS 2024, whose Parareal iterations start
  from a cheap coarse solve): `coarse_steps` K sequential denoiser calls at the coarse nodes
  j = floor(i T / K), i = 0..K-1; each node's prediction is held over the fine steps up to the
  next node. For the DDIM drift this is exactly K-step DDIM on the coarse sub-grid with the fine
  states on the DDIM interpolant X[j] = sqrt(abar_j) x0_hat + sqrt(1 - abar_j) eps_hat (4.5i).

Both warm starts are one rule, "anchors": at an anchor step j the denoiser is called at X[j]
(one sequential round), giving x0_hat (Song et al. 2021, eq. 12's "predicted x0")

    x0_hat = (X[j] - sqrt(1 - abar_j) eps_hat) / sqrt(abar_j)                          (4.5g)

and at a step j that is not an anchor the noise estimate is the one consistent with the held x0_hat,

    eps_j(x) = (x - sqrt(abar_j) x0_hat) / sqrt(1 - abar_j),                            (4.5h)

then X[j+1] = f_j(X[j]) + n_j with the sampler's own step f_j and pre-sampled noise n_j. States up
to the first non-anchor step are exact; the window starts there. Each anchor call counts as one
round and one NFE. With x0_hat held fixed, the state after the last step is x0_hat itself
(abar = 1 there), so the trace entry of a warm-up round is its x0_hat.
"""
from __future__ import annotations

import torch

INITS = ("x_T", "frozen_x0", "coarse")


def anchor_steps(init: str, steps: int, warmup_steps: int = 1, coarse_steps: int = 10) -> list[int]:
    """The steps whose denoiser call the warm start makes, in order (sequential rounds)."""
    if init == "x_T":
        return []
    if init == "frozen_x0":
        return list(range(min(int(warmup_steps), steps)))
    if init == "coarse":
        k = min(int(coarse_steps), steps)
        return sorted({i * steps // k for i in range(k)})
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


def exact_prefix(anchors: list[int]) -> int:
    """r such that X[0..r] is exact: the anchors include every step 0..r-1."""
    have, r = set(anchors), 0
    while r in have:
        r += 1
    return r


def x0_from_eps(abar: torch.Tensor, x: torch.Tensor, eps_hat: torch.Tensor) -> torch.Tensor:
    """(4.5g): the clean-data prediction of a noise prediction at cumulative signal abar."""
    return (x - torch.sqrt(1.0 - abar) * eps_hat) / torch.sqrt(abar)


def eps_from_x0(abar: torch.Tensor, x: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
    """(4.5h): the noise estimate consistent with a held clean-data prediction."""
    return (x - torch.sqrt(abar) * x0_hat) / torch.sqrt(1.0 - abar)


def initial_trajectory(problem, x_T: torch.Tensor, anchors: list[int]):
    """(X [T+1, N, *shape], [x0_hat of each anchor round]). No anchors: every state is x_T.
    Otherwise one pass over the steps: a denoiser call (N points) at each anchor, cheap tensor
    operations elsewhere (a loop over steps, never over samples)."""
    T = problem.steps
    if not anchors:
        return x_T.unsqueeze(0).repeat(T + 1, *([1] * x_T.ndim)), []
    have = set(anchors)
    X = x_T.new_empty((T + 1, *x_T.shape))
    X[0] = x_T
    predictions, x0_hat = [], None
    abar = problem.grid.abar
    for j in range(T):
        if j in have:
            eps_hat = problem.eps(X[j:j + 1], j, j + 1)[0]                # one sequential round
            x0_hat = x0_from_eps(abar[j], X[j], eps_hat)
            predictions.append(x0_hat)
        else:
            eps_hat = eps_from_x0(abar[j], X[j], x0_hat)
        X[j + 1] = problem.step(X[j], eps_hat, j) + problem.step_noise[j]
    return X, predictions
