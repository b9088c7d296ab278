"""Isotropic Gaussian mixtures and their exact VP noise predictor (the oracle denoiser).

Noised at log-SNR a, component k becomes N(sqrt(s(a)) mu_k, (s(a) v_k + s(-a)) I), so with
responsibilities r_k(z), E[eps | z] = sqrt(s(-a)) sum_k r_k(z) (z - sqrt(s(a)) mu_k) / (s(a) v_k + s(-a)).

The component is the class label: given the class c, the law is the one Gaussian c and the exact
class-conditional predictor is the same formula with r_k = [k = c].
"""
from __future__ import annotations

import torch

from .base import Dataset


class GaussianMixture(Dataset):
    has_exact_score = True
    #: `log_density` is exact (metrics data_nll, kl; registrations declare DatasetSpec(exact_density=True))
    has_exact_density = True

    def __init__(self, means, variances, weights=None, n_train: int = 100_000):
        super().__init__(n_train)
        self.means = torch.as_tensor(means, dtype=torch.float64)          # [K, d]
        k = self.means.shape[0]
        self.variances = torch.as_tensor(variances, dtype=torch.float64).expand(k).clone()  # [K]
        w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()
        self.shape = (self.means.shape[1],)
        self.num_classes = k

    def sample_labelled(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n points and the component (class) each was drawn from."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn((n, self.shape[0]), generator=generator, dtype=torch.float64)
        x = self.means[comp] + self.variances[comp].sqrt().unsqueeze(1) * noise
        return x.float(), comp

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.sample_labelled(n, generator)[0]

    def train_set(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sample_labelled(self.n_train, generator)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable component of each clean point (the Bayes classifier)."""
        return self.responsibilities(x, torch.full((x.shape[0],), 30.0, dtype=torch.float64)).argmax(1)

    def responsibilities(self, z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
        """P(component k | z_a), [N, K]."""
        return torch.softmax(self._log_joint(z, logsnr)[0], dim=1)

    def _log_joint(self, z: torch.Tensor, logsnr):
        zd, a = z.double(), torch.as_tensor(logsnr, dtype=torch.float64, device=z.device).expand(z.shape[0])
        s, sn = torch.sigmoid(a).unsqueeze(1), torch.sigmoid(-a).unsqueeze(1)                  # [N, 1]
        mu = s.sqrt().unsqueeze(-1) * self.means.to(z.device).unsqueeze(0)                     # [N, K, d]
        var = s * self.variances.to(z.device).unsqueeze(0) + sn                               # [N, K]
        diff = zd.unsqueeze(1) - mu                                                            # [N, K, d]
        d = z.shape[1]
        log_r = torch.log(self.weights.to(z.device)) - 0.5 * diff.pow(2).sum(-1) / var - 0.5 * d * torch.log(var)
        return log_r, diff, var, sn

    def exact_eps(self, z: torch.Tensor, logsnr: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """E[eps | z_a] [N, d]; with class_labels [N], E[eps | z_a, class] (that component alone)."""
        log_r, diff, var, sn = self._log_joint(z, logsnr)
        if class_labels is not None:
            own = torch.nn.functional.one_hot(class_labels.to(z.device).long(), log_r.shape[1]).bool()
            log_r = log_r.masked_fill(~own, float("-inf"))
        r = torch.softmax(log_r, dim=1)                                                        # [N, K]
        e = sn.sqrt() * (r.unsqueeze(-1) * diff / var.unsqueeze(-1)).sum(1)
        return e.to(z.dtype)

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) of the clean mixture, [N] (float64)."""
        xd = x.double().flatten(1)
        diff = xd.unsqueeze(1) - self.means.to(xd.device).unsqueeze(0)
        d = xd.shape[1]
        var = self.variances.to(xd.device).unsqueeze(0)
        comp = -0.5 * diff.pow(2).sum(-1) / var - 0.5 * d * torch.log(2 * torch.pi * var)
        return torch.logsumexp(torch.log(self.weights.to(xd.device)) + comp, dim=1)
