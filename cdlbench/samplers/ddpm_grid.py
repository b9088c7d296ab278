"""The DDPM reverse-step coefficients on a (possibly strided) subset of the 1000-step grid.

For consecutive grid times t > t' (t' = -1 meaning abar = 1), the effective step has
beta = 1 - abar_t / abar_t', and the ancestral update (Ho et al. 2020, Algorithm 2; docs/method.md section 4)
    x_{t'} = (x_t - beta / sqrt(1 - abar_t) eps_hat) / sqrt(1 - beta) + sigma xi,
    sigma^2 = beta  or  beta~ = (1 - abar_t') / (1 - abar_t) beta  (posterior), 0 on the last step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..diffusion.schedules import alphas_bar, ddpm_betas, logsnr_from_alpha_bar, strided_timesteps

VARIANCES = ("beta", "posterior")


@dataclass(frozen=True)
class DDPMGrid:
    timesteps: torch.Tensor     # int64 [S], descending
    logsnr: torch.Tensor        # [S], log-SNR told to the denoiser at step j
    abar: torch.Tensor          # [S]
    abar_next: torch.Tensor     # [S], abar of the grid point reached by step j
    beta: torch.Tensor          # [S], effective beta of step j
    posterior_var: torch.Tensor  # [S], beta~ (0 on the last step)

    @property
    def steps(self) -> int:
        return int(self.timesteps.numel())

    def variance(self, kind: str) -> torch.Tensor:
        """Per-step noise variance of the ancestral sampler, [S] (0 on the last step)."""
        if kind == "posterior":
            return self.posterior_var
        if kind == "beta":
            v = self.beta.clone()
            v[-1] = 0.0
            return v
        raise ValueError(f"variance must be one of {VARIANCES}, got {kind!r}")

    def to(self, device, dtype) -> "DDPMGrid":
        return DDPMGrid(self.timesteps.to(device), *(t.to(device=device, dtype=dtype) for t in
                        (self.logsnr, self.abar, self.abar_next, self.beta, self.posterior_var)))

    def mean_step(self, x: torch.Tensor, eps_hat: torch.Tensor, j) -> torch.Tensor:
        """Ancestral mean of step(s) j; x, eps_hat [..., N, *shape] with j a slice or index (leading dims)."""
        beta, abar = self.beta[j], self.abar[j]
        view = beta.shape + (1,) * (x.ndim - beta.ndim)
        c_eps = (beta / torch.sqrt(1.0 - abar)).reshape(view)
        return (x - c_eps * eps_hat) / torch.sqrt(1.0 - beta).reshape(view)


def ddpm_grid(steps: int = 1000, num_train_steps: int = 1000) -> DDPMGrid:
    ts = strided_timesteps(steps, num_train_steps)
    abar_all = alphas_bar(ddpm_betas(num_train_steps))
    abar = abar_all[ts]
    abar_next = torch.cat([abar[1:], abar.new_ones(1)])
    beta = 1.0 - abar / abar_next
    post = (1.0 - abar_next) / (1.0 - abar) * beta
    return DDPMGrid(ts, logsnr_from_alpha_bar(abar), abar, abar_next, beta, post)
