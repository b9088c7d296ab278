"""Information-theoretic diffusion likelihood (Kong et al., ICLR 2023; docs/method.md section 2).

    -log p(x) = h_G + 1/2 Integral_a [ mmse(x, a) - mmse_G(a) ] da                     (ITD eq.)
    mmse(x, a) = E_eps || eps - eps_hat(z_a(x, eps), a) ||^2
    mmse_G(a)  = sum_i s(a + log lam_i)          (Gaussian reference, diagonal variances lam)

Monte-Carlo over a with a truncated logistic proposal q; w(a) = 1/q(a).
For the noisier density p_zeta (docs/method.md section 2, "Density of the noisier distribution"),
noising y at a is a channel on x with total log-SNR a' = logit(s(a) s(zeta)), and the
best estimate of the added noise is sqrt(s(-a)/s(-a')) eps_hat(z, a').
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .schedules import gaussian_entropy

# Per-dimension data variance at or below this is "constant": the data variance is clamped to it
# (cdlbench/run/data.py) so that log lam, h_G and mmse_G stay finite, and default_proposal leaves
# such dimensions out (docs/method.md section 2, "Default proposal").
VARIANCE_FLOOR = 1e-8


@dataclass(frozen=True)
class LogisticProposal:
    """Truncated logistic law of log-SNR: a = loc + scale * logit(u'),
    u' ~ U(s(-clip), s(clip)), i.e. a in [loc - clip*scale, loc + clip*scale]."""

    loc: float
    scale: float
    clip: float = 3.0

    def sample(self, shape, generator: torch.Generator | None, device=None, dtype=torch.float32):
        u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        lo, hi = torch.sigmoid(torch.tensor(-self.clip)).item(), torch.sigmoid(torch.tensor(self.clip)).item()
        u = lo + (hi - lo) * u
        return self.loc + self.scale * torch.logit(u)

    def inverse_density(self, a: torch.Tensor) -> torch.Tensor:
        """w(a) = 1/q(a) = scale * tanh(clip/2) / (s(v) s(-v)), v = (a - loc)/scale."""
        v = (a - self.loc) / self.scale
        return self.scale * math.tanh(self.clip / 2) / (torch.sigmoid(v) * torch.sigmoid(-v))


def _log_var(data_var, d: int, device=None) -> torch.Tensor:
    lv = torch.log(torch.as_tensor(data_var, dtype=torch.float64, device=device)).flatten()
    if lv.numel() == 1:
        lv = lv.expand(d)
    if lv.numel() != d:
        raise ValueError(f"data_var has {lv.numel()} entries, data has {d} dimensions")
    return lv


def varying_dimensions(data_var, d: int) -> torch.Tensor:
    """[d] bool: the dimensions whose data variance is above VARIANCE_FLOOR (the others are constant)."""
    var = torch.as_tensor(data_var, dtype=torch.float64).flatten()
    if var.numel() == 1:
        var = var.expand(d)
    if var.numel() != d:
        raise ValueError(f"data_var has {var.numel()} entries, data has {d} dimensions")
    return var > VARIANCE_FLOOR


def default_proposal(data_var, d: int, clip: float = 3.0, loc: float | None = None,
                     scale: float | None = None) -> LogisticProposal:
    """the default proposal's heuristic (docs/method.md section 2): loc = -mean(log lam); scale =
    sqrt(1 + 3/pi var(log lam)) if d > 2 else 3, over the dimensions that vary (variance above
    VARIANCE_FLOOR; all of them when none does): a constant dimension has no noise level to learn
    (its MMSE is 0 at every log-SNR) and would put its floored log-variance into the mean."""
    lv = _log_var(data_var, d)
    varying = varying_dimensions(data_var, d)
    if varying.any():
        lv = lv[varying.to(lv.device)]
    n = lv.numel()
    if loc is None:
        loc = -lv.mean().item()
    if scale is None:
        scale = math.sqrt(1.0 + 3.0 / math.pi * lv.var(unbiased=False).item()) if n > 2 else 3.0
    return LogisticProposal(float(loc), float(scale), float(clip))


def mmse_gaussian(a: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """mmse_G(a) = sum_i s(a + log lam_i); a [...] -> [...]."""
    return torch.sigmoid(a.unsqueeze(-1).double() + log_var).sum(-1).to(a.dtype)


def effective_logsnr(a: torch.Tensor, zeta: torch.Tensor | float) -> torch.Tensor:
    """a' = logit(s(a) s(zeta)), computed in log space for stability."""
    log_p = torch.nn.functional.logsigmoid(a) + torch.nn.functional.logsigmoid(torch.as_tensor(zeta, dtype=a.dtype, device=a.device))
    return log_p - torch.log1p(-torch.exp(log_p).clamp(max=1 - 1e-7))


def noisy_inputs(x: torch.Tensor, a: torch.Tensor, eps: torch.Tensor, zeta=None):
    """Inputs for the denoiser at the ITD points.

    x [N, *shape], a [N, B], eps [N, B, *shape] ->
    z [N*B, *shape], a_net [N*B] (the log-SNR told to the network), rescale [N*B]
    such that the MMSE estimate of eps is rescale * eps_hat(z, a_net).
    """
    n, b = a.shape
    shape = x.shape[1:]
    sa = torch.sigmoid(a).sqrt().reshape(n, b, *([1] * len(shape)))
    sn = torch.sigmoid(-a).sqrt().reshape(n, b, *([1] * len(shape)))
    z = (sa * x.unsqueeze(1) + sn * eps).reshape(n * b, *shape)
    if zeta is None:
        return z, a.reshape(-1), torch.ones_like(a).reshape(-1)
    zeta = torch.as_tensor(zeta, dtype=a.dtype, device=a.device)
    if zeta.ndim == 1:  # one zeta per data point
        zeta = zeta.unsqueeze(1)
    a_eff = effective_logsnr(a, zeta)
    rescale = torch.sqrt(torch.sigmoid(-a) / torch.sigmoid(-a_eff))
    return z, a_eff.reshape(-1), rescale.reshape(-1)


def itd_integrand(eps: torch.Tensor, eps_hat: torch.Tensor, a: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """||eps - eps_hat||^2 - mmse_G(a) per point. eps, eps_hat [N, B, *shape], a [N, B] -> [N, B]."""
    err = (eps - eps_hat).pow(2).flatten(2).sum(-1)
    return err - mmse_gaussian(a, log_var.to(a.device))


def nll_from_integrand(integrand: torch.Tensor, a: torch.Tensor, proposal: LogisticProposal,
                       log_var: torch.Tensor) -> torch.Tensor:
    """-log p = h_G + 1/2 mean_j w(a_j) integrand_j  ->  [N] nats."""
    h_g = gaussian_entropy(log_var).to(integrand)
    return h_g + 0.5 * (proposal.inverse_density(a) * integrand).mean(dim=1)


def log_likelihood(denoiser, x: torch.Tensor, *, data_var, n_points: int, generator: torch.Generator | None,
                   zeta=None, loc: float | None = None, scale: float | None = None, clip: float = 3.0,
                   chunk_size: int = 1 << 16, labels: torch.Tensor | None = None) -> torch.Tensor:
    """ITD estimate of log p(x) (zeta=None) or log p_zeta(x) in nats, one value per row of x.

    x [N, *shape]; data_var: per-dimension data variance (scalar or [d]); n_points: Monte-Carlo
    points per sample (all evaluated in batched denoiser calls of at most chunk_size points);
    labels [N]: the class of each row for a class-conditional denoiser (then log p(x | class)).
    """
    n = x.shape[0]
    d = x[0].numel()
    log_var = _log_var(data_var, d, device=x.device)
    proposal = default_proposal(data_var, d, clip, loc, scale)
    a = proposal.sample((n, n_points), generator, device=x.device, dtype=x.dtype)
    eps = torch.randn((n, n_points, *x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)
    z, a_net, rescale = noisy_inputs(x, a, eps, zeta)
    rows = None if labels is None else labels.repeat_interleave(n_points)          # rows: [N, n_points]
    outs = [denoiser.eps(z[i:i + chunk_size], a_net[i:i + chunk_size], None if rows is None else rows[i:i + chunk_size])
            for i in range(0, z.shape[0], chunk_size)]
    eps_hat = (torch.cat(outs) * rescale.reshape(-1, *([1] * (x.ndim - 1)))).reshape(eps.shape)
    integrand = itd_integrand(eps, eps_hat, a, log_var)
    return -nll_from_integrand(integrand, a, proposal, log_var)
