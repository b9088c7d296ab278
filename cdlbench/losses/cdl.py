"""Contrastive Diffusion Loss (Wu et al. 2024; docs/method.md section 3).

The MMSE denoiser implies the Bayes classifier between clean data (label +1) and zeta-noised
data (label -1):
    logit P(clean | y) = log p(y) - log p_zeta(y) = 1/2 Integral [ mmse_zeta(y, a) - mmse(y, a) ] da.
For each of K selected samples: draw zeta, flip a fair coin for (label, y), estimate both log
densities with B shared Monte-Carlo points (h_G and mmse_G cancel in the difference), and take
    CDL = softplus(label * (log p_zeta(y) - log p(y))) / B           (docs/method.md section 3, step 4).
Total = w_std * L_std + weight * sum_k CDL_k. All 2*K*B denoiser evaluations are one batched call;
with `one_call: true` the base loss's N evaluations join it (one forward and one backward per
training step instead of two; the same draws in the same order, so the same loss up to float
round-off: summing a gradient over one batch of N + 2KB rows instead of two does not add in the
same order). The shipped suites were trained with two calls and keep them (`one_call: false`, the
neutral value, leaves every committed training key as it was).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..diffusion.itd import (LogisticProposal, _log_var, default_proposal, effective_logsnr, mmse_gaussian,
                             noisy_inputs)
from ..registry import LOSSES
from ..specs import LossSpec
from .base import EpsQuery, Finish, LossOutput, batched_eps
from .itd import proposal_range


def classifier_query(y: torch.Tensor, zeta: torch.Tensor, a: torch.Tensor, eps: torch.Tensor,
                     proposal: LogisticProposal, labels: torch.Tensor | None = None,
                     independent: tuple | None = None) -> tuple[EpsQuery, Finish]:
    """The 2*K*B denoiser inputs of the ITD estimate of log p(y) - log p_zeta(y) and the function
    that turns their eps_hat into the logit [K] (see classifier_logit; the two-phase form, losses/base.py)."""
    k, b = a.shape
    a_z, eps_z = (a, eps) if independent is None else independent[:2]
    z, a_clean, _ = noisy_inputs(y, a, eps)
    z_zeta, a_zeta, rescale = noisy_inputs(y, a_z, eps_z, zeta)   # shared points: z_zeta == z
    rows = None if labels is None else labels.repeat_interleave(b).repeat(2)   # rows: [2, K, B]
    view = (k, b, *y.shape[1:])

    def logit(out: torch.Tensor) -> torch.Tensor:
        eps_clean = out[: k * b].reshape(view)
        eps_zeta = (out[k * b:] * rescale.reshape(-1, *([1] * (y.ndim - 1)))).reshape(view)
        mmse_clean = (eps - eps_clean).pow(2).flatten(2).sum(-1)      # [K, B]
        mmse_zeta = (eps_z - eps_zeta).pow(2).flatten(2).sum(-1)
        if independent is None:                                       # h_G and mmse_G cancel point by point
            return 0.5 * (proposal.inverse_density(a) * (mmse_zeta - mmse_clean)).mean(1)
        log_var = independent[2]
        clean = proposal.inverse_density(a) * (mmse_clean - mmse_gaussian(a, log_var.to(a.device)))
        noisier = proposal.inverse_density(a_z) * (mmse_zeta - mmse_gaussian(a_z, log_var.to(a.device)))
        return 0.5 * (noisier.mean(1) - clean.mean(1))
    return EpsQuery(torch.cat([z, z_zeta]), torch.cat([a_clean, a_zeta]), rows), logit


def classifier_logit(denoiser, y: torch.Tensor, zeta: torch.Tensor, a: torch.Tensor, eps: torch.Tensor,
                     proposal: LogisticProposal, labels: torch.Tensor | None = None,
                     independent: tuple | None = None) -> torch.Tensor:
    """ITD estimate of log p(y) - log p_zeta(y), [K], from shared points a [K, B], eps [K, B, *shape]
    (with labels [K]: the class-conditional densities log p(y | c) - log p_zeta(y | c)).

    independent = (a_zeta, eps_zeta, log_var): log p_zeta gets its own points (as the authors'
    reference code does), so h_G still cancels but the Gaussian reference terms mmse_G(a) do not:
        logit = 1/2 mean_j w(a'_j) [mmse_zeta(a'_j) - mmse_G(a'_j)] - 1/2 mean_j w(a_j) [mmse(a_j) - mmse_G(a_j)]
    (docs/method.md section 2, the ITD equation, once per density). Same expectation as the shared
    form, larger variance. One denoiser call of 2*K*B points."""
    query, logit = classifier_query(y, zeta, a, eps, proposal, labels, independent)
    return logit(denoiser.eps(query.z, query.logsnr, query.labels))


# base: a loss name or mapping, validated like one; mc_loc/mc_scale None: the default proposal (docs/method.md section 2) (as before they existed);
# shared_points false: independent Monte-Carlo points per density, as in the authors' reference code (docs/method.md section 7);
# one_call true: the base loss's denoiser evaluations join the classifier's call (needs a base loss with the two-phase `query`)
@LOSSES.register("cdl", spec=LossSpec(nested={"base": "losses"}),
                 neutral={"mc_loc": None, "mc_scale": None, "shared_points": True, "one_call": False})
class ContrastiveDiffusionLoss:
    """Base loss plus the noise-classifier (contrastive) loss on K samples per batch."""

    def __init__(self, base: str | dict = "itd", weight: float = 1.0, base_weight: float = 1.0,
                 samples_per_batch: int = 2, mc_points: int = 128, zeta_loc: float | None = None,
                 zeta_scale: float | None = None, zeta_clip: float = 3.0, mc_loc: float | None = None,
                 mc_scale: float | None = None, shared_points: bool = True, one_call: bool = False,
                 data_var=1.0, shape: tuple = (2,)):
        from ..registry import LOSSES as registry  # late: base losses register on import

        base_spec = {"name": base} if isinstance(base, str) else dict(base)
        if base_spec.get("name") == "cdl":
            raise ValueError("cdl cannot wrap itself")
        self.base = registry.build(base_spec.pop("name"), base_spec, data_var=data_var, shape=shape)
        d = int(math.prod(shape))
        self.log_var = _log_var(data_var, d)
        # log-SNR law of the classifier's Monte-Carlo points: the default proposal's heuristic (docs/method.md section 2) unless mc_loc/mc_scale
        self.proposal = default_proposal(data_var, d, loc=mc_loc, scale=mc_scale)
        zp = default_proposal(data_var, d, zeta_clip, zeta_loc, zeta_scale)
        self.zeta_law = zp
        self.weight, self.base_weight = float(weight), float(base_weight)
        self.k, self.b = int(samples_per_batch), int(mc_points)
        self.shared_points = bool(shared_points)
        self.one_call = bool(one_call)
        if self.one_call and not callable(getattr(self.base, "query", None)):
            raise ValueError(f"one_call needs a base loss with the two-phase form (query); {base_spec} has none")

    def training_logsnr_range(self) -> tuple[float, float] | None:
        """The hull of the base loss's range and the classifier's evaluations: clean points at
        a in the proposal's [lo, hi], zeta-noised ones at a' = logit(s(a) s(zeta)) (docs/method.md
        section 2), increasing in a and zeta, so down to logit(s(lo) s(zeta_lo)); None when the base
        loss declares no range."""
        base = getattr(self.base, "training_logsnr_range", None)
        base_range = base() if callable(base) else None
        if base_range is None:
            return None
        lo, hi = proposal_range(self.proposal)
        zeta_lo, _ = proposal_range(self.zeta_law)
        a_lo = torch.tensor(lo, dtype=torch.float64)
        noisier_lo = float(effective_logsnr(a_lo, torch.tensor(zeta_lo, dtype=torch.float64)))
        return min(base_range[0], lo, noisier_lo), max(base_range[1], hi)

    def __call__(self, denoiser, x0: torch.Tensor, *, generator: torch.Generator | None,
                 labels: torch.Tensor | None = None) -> LossOutput:
        if self.one_call:                                        # the base loss draws first, as below
            base_query, base_finish = self.base.query(x0, generator=generator, labels=labels)
        else:
            base = self.base(denoiser, x0, generator=generator, labels=labels)
        n = x0.shape[0]
        k = min(self.k, n)
        x = x0[:k]                                              # the batch is a random draw
        dev, dt = x0.device, x0.dtype
        zeta = self.zeta_law.sample((k,), generator, device=dev, dtype=dt)               # step 1
        label = torch.where(torch.rand(k, generator=generator, device=dev) < 0.5, 1.0, -1.0).to(dt)  # step 2
        eps0 = torch.randn(x.shape, generator=generator, device=dev, dtype=dt)
        view = (-1,) + (1,) * (x.ndim - 1)
        noised = torch.sigmoid(zeta).sqrt().view(view) * x + torch.sigmoid(-zeta).sqrt().view(view) * eps0
        y = torch.where((label > 0).view(view), x, noised)
        a = self.proposal.sample((k, self.b), generator, device=dev, dtype=dt)               # step 3
        eps = torch.randn((k, self.b, *x.shape[1:]), generator=generator, device=dev, dtype=dt)
        independent = None
        if not self.shared_points:                     # log p_zeta's own points, drawn after log p's
            a_zeta = self.proposal.sample((k, self.b), generator, device=dev, dtype=dt)
            eps_zeta = torch.randn((k, self.b, *x.shape[1:]), generator=generator, device=dev, dtype=dt)
            independent = (a_zeta, eps_zeta, self.log_var)
        query, logit_of = classifier_query(y, zeta, a, eps, self.proposal, None if labels is None else labels[:k],
                                           independent)
        if self.one_call:                                        # N + 2*K*B points, one call
            base_eps, classifier_eps = batched_eps(denoiser, [base_query, query])
            base, logit = base_finish(base_eps), logit_of(classifier_eps)
        else:
            logit = logit_of(denoiser.eps(query.z, query.logsnr, query.labels))
        cdl = F.softplus(-label * logit) / self.b                                          # step 4
        # mean over the batch of per_sample reproduces w_std * mean(L_std) + weight * sum_k CDL_k
        per_sample = self.base_weight * base.per_sample
        per_sample = per_sample + F.pad(self.weight * n * cdl, (0, n - k))
        parts = dict(base.parts)
        parts.update({"cdl": cdl.sum().detach(), "classifier_acc": ((logit > 0) == (label > 0)).float().mean().detach()})
        return LossOutput(per_sample, parts)
