"""The slow reference form of the Contrastive Diffusion Loss, kept only for the speed benchmark.

It computes the same estimates as `cdl.ContrastiveDiffusionLoss` (same draws from the same
generator, in the same order) the way the paper's reference code did (docs/method.md section 3): a Python
loop over the K selected samples and, for each, one ITD likelihood at a time,
    log p(y_k)       = -(h_G + 1/2 mean_j w(a_j) (||eps_j - eps_hat(z_j, a_j)||^2 - mmse_G(a_j)))
    log p_zeta(y_k)  = the same with the rescaled predictor at a'_j = logit(s(a_j) s(zeta_k)),
each with its own denoiser call of B points: 2K calls instead of one call of 2KB points.
Not registered: the benchmark (`benchmarks/targets.py`, `tests/bench/`) imports it directly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cdlbench.diffusion.itd import itd_integrand, nll_from_integrand, noisy_inputs
from cdlbench.losses.base import LossOutput
from cdlbench.losses.cdl import ContrastiveDiffusionLoss


def log_density_one(denoiser, y: torch.Tensor, a: torch.Tensor, eps: torch.Tensor, proposal, log_var,
                    zeta: torch.Tensor | None = None) -> torch.Tensor:
    """ITD estimate of log p(y) (zeta None) or log p_zeta(y) for ONE sample: y [1, *shape],
    a [1, B], eps [1, B, *shape] -> [1]; one denoiser call of B points (docs/method.md section 2)."""
    z, a_net, rescale = noisy_inputs(y, a, eps, None if zeta is None else zeta.reshape(1))
    eps_hat = (denoiser.eps(z, a_net) * rescale.reshape(-1, *([1] * (y.ndim - 1)))).reshape(eps.shape)
    return -nll_from_integrand(itd_integrand(eps, eps_hat, a, log_var.to(y.device)), a, proposal,
                               log_var.to(y.device))


def classifier_logit_loop(denoiser, y: torch.Tensor, zeta: torch.Tensor, a: torch.Tensor, eps: torch.Tensor,
                          proposal, log_var) -> torch.Tensor:
    """log p(y_k) - log p_zeta(y_k) for k = 1..K, one sample and one likelihood at a time -> [K]."""
    logits = []
    for k in range(y.shape[0]):
        yk, ak, ek = y[k:k + 1], a[k:k + 1], eps[k:k + 1]
        log_p = log_density_one(denoiser, yk, ak, ek, proposal, log_var)
        log_p_zeta = log_density_one(denoiser, yk, ak, ek, proposal, log_var, zeta[k])
        logits.append(log_p - log_p_zeta)
    return torch.cat(logits)


class LoopedContrastiveDiffusionLoss(ContrastiveDiffusionLoss):
    """`cdl` with the classifier logits computed by `classifier_logit_loop` (same draws, same value)."""

    def __call__(self, denoiser, x0: torch.Tensor, *, generator: torch.Generator | None) -> LossOutput:
        base = self.base(denoiser, x0, generator=generator)
        n = x0.shape[0]
        k = min(self.k, n)
        x = x0[:k]
        dev, dt = x0.device, x0.dtype
        zeta = self.zeta_law.sample((k,), generator, device=dev, dtype=dt)
        label = torch.where(torch.rand(k, generator=generator, device=dev) < 0.5, 1.0, -1.0).to(dt)
        eps0 = torch.randn(x.shape, generator=generator, device=dev, dtype=dt)
        view = (-1,) + (1,) * (x.ndim - 1)
        noised = torch.sigmoid(zeta).sqrt().view(view) * x + torch.sigmoid(-zeta).sqrt().view(view) * eps0
        y = torch.where((label > 0).view(view), x, noised)
        a = self.proposal.sample((k, self.b), generator, device=dev, dtype=dt)
        eps = torch.randn((k, self.b, *x.shape[1:]), generator=generator, device=dev, dtype=dt)
        logit = classifier_logit_loop(denoiser, y, zeta, a, eps, self.proposal, self.log_var)
        cdl = F.softplus(-label * logit) / self.b
        per_sample = self.base_weight * base.per_sample + F.pad(self.weight * n * cdl, (0, n - k))
        parts = dict(base.parts)
        parts.update({"cdl": cdl.sum().item(), "classifier_acc": ((logit > 0) == (label > 0)).float().mean().item()})
        return LossOutput(per_sample, parts)


def looped_like(loss: ContrastiveDiffusionLoss) -> LoopedContrastiveDiffusionLoss:
    """The reference form of an existing `cdl` loss object (same parameters, base loss and laws)."""
    ref = LoopedContrastiveDiffusionLoss.__new__(LoopedContrastiveDiffusionLoss)
    ref.__dict__.update(loss.__dict__)
    return ref
