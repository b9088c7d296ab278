"""ITD loss: the single-point Monte-Carlo estimate of -log p(x) (docs/method.md section 2) as a training loss,
    h_G + 1/2 w(a) (||eps - eps_hat(z_a, a)||^2 - mmse_G(a)),  a ~ truncated logistic, w = 1/q.
Its expectation is the ITD negative log-likelihood in nats; its gradient is a w(a)-weighted eps-MSE."""
from __future__ import annotations

import math

import torch

from ..diffusion.itd import _log_var, default_proposal, itd_integrand, nll_from_integrand, noisy_inputs
from ..registry import LOSSES
from .base import EpsQuery, Finish, LossOutput, QueryLoss


def proposal_range(proposal) -> tuple[float, float]:
    """[loc - clip*scale, loc + clip*scale]: the log-SNRs a truncated logistic proposal draws."""
    return proposal.loc - proposal.clip * proposal.scale, proposal.loc + proposal.clip * proposal.scale


@LOSSES.register("itd")
class ITDLoss(QueryLoss):
    """Importance-weighted eps-MSE whose mean estimates -log p(x) in nats."""

    def __init__(self, loc: float | None = None, scale: float | None = None, clip: float = 3.0,
                 data_var=1.0, shape: tuple = (2,)):
        d = int(math.prod(shape))
        self.log_var = _log_var(data_var, d)
        self.proposal = default_proposal(data_var, d, clip, loc, scale)

    def training_logsnr_range(self) -> tuple[float, float]:
        """The support of its truncated logistic proposal, [loc - clip*scale, loc + clip*scale]."""
        return proposal_range(self.proposal)

    def query(self, x0: torch.Tensor, *, generator: torch.Generator | None,
              labels: torch.Tensor | None = None) -> tuple[EpsQuery, Finish]:
        """Draw one (a, eps) per sample; the loss from eps_hat at those points (the two-phase form, losses/base.py)."""
        n = x0.shape[0]
        a = self.proposal.sample((n, 1), generator, device=x0.device, dtype=x0.dtype)          # [N, 1]
        eps = torch.randn((n, 1, *x0.shape[1:]), generator=generator, device=x0.device, dtype=x0.dtype)
        z, a_net, _ = noisy_inputs(x0, a, eps)

        def finish(eps_hat: torch.Tensor) -> LossOutput:
            eps_hat = eps_hat.reshape(eps.shape)                         # one point per sample: rows = samples
            nll = nll_from_integrand(itd_integrand(eps, eps_hat, a, self.log_var), a, self.proposal, self.log_var)
            return LossOutput(nll, {"nll": nll.mean().detach()})
        return EpsQuery(z, a_net, labels), finish
