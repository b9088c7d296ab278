"""Isotropic Gaussian mixtures and their exact VP noise predictor (the oracle denoiser).

Noised at log-SNR a, component k becomes N(sqrt(s(a)) mu_k, (s(a) v_k + s(-a)) I), so with
responsibilities r_k(z), E[eps | z] = sqrt(s(-a)) sum_k r_k(z) (z - sqrt(s(a)) mu_k) / (s(a) v_k + s(-a)).
"""
from __future__ import annotations

import torch

from .base import Dataset


class GaussianMixture(Dataset):
    has_exact_score = True

    def __init__(self, means, variances, weights=None, n_train: int = 100_000):
        super().__init__(n_train)
        self.means = torch.as_tensor(means, dtype=torch.float64)          # [K, d]
        k = self.means.shape[0]
        self.variances = torch.as_tensor(variances, dtype=torch.float64).expand(k).clone()  # [K]
        w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()
        self.shape = (self.means.shape[1],)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn((n, self.shape[0]), generator=generator, dtype=torch.float64)
        x = self.means[comp] + self.variances[comp].sqrt().unsqueeze(1) * noise
        return x.float()

    def exact_eps(self, z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
        zd, a = z.double(), torch.as_tensor(logsnr, dtype=torch.float64, device=z.device).expand(z.shape[0])
        s, sn = torch.sigmoid(a).unsqueeze(1), torch.sigmoid(-a).unsqueeze(1)                  # [N, 1]
        mu = s.sqrt().unsqueeze(-1) * self.means.to(z.device).unsqueeze(0)                     # [N, K, d]
        var = s * self.variances.to(z.device).unsqueeze(0) + sn                               # [N, K]
        diff = zd.unsqueeze(1) - mu                                                            # [N, K, d]
        d = z.shape[1]
        log_r = torch.log(self.weights.to(z.device)) - 0.5 * diff.pow(2).sum(-1) / var - 0.5 * d * torch.log(var)
        r = torch.softmax(log_r, dim=1)                                                        # [N, K]
        e = sn.sqrt() * (r.unsqueeze(-1) * diff / var.unsqueeze(-1)).sum(1)
        return e.to(z.dtype)

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) of the clean mixture, [N]."""
        xd = x.double()
        diff = xd.unsqueeze(1) - self.means.unsqueeze(0)
        d = x.shape[1]
        var = self.variances.unsqueeze(0)
        comp = -0.5 * diff.pow(2).sum(-1) / var - 0.5 * d * torch.log(2 * torch.pi * var)
        return torch.logsumexp(torch.log(self.weights) + comp, dim=1)
