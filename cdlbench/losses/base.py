"""Loss protocol: `loss(denoiser, x0, *, generator, labels=None) -> LossOutput(per_sample, parts)`
(labels [N]: the class of each row of x0, given only to a class-conditional denoiser).

Unreduced: the trainer takes `per_sample.mean()`; `parts` holds scalar diagnostics as detached
0-d tensors (reading them back would wait for the GPU on every step; the trainer does not).

Two-phase form (optional, for a loss that wraps another, as CDL wraps its base loss):
`loss.query(x0, *, generator, labels=None) -> (EpsQuery, finish)` draws all of the loss's random
numbers and says which eps-view denoiser evaluations it needs; `finish(eps_hat) -> LossOutput`
computes the loss from them. `batched_eps` then serves several queries with one denoiser call.

Training range (optional): `loss.training_logsnr_range() -> (lo, hi)`, the log-SNR interval of the
denoiser evaluations the loss trains on (the hull, where it trains on several). The runner
records the share of a sampler's evaluations outside it (`ood_eval_share`, docs/metrics.md)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class LossOutput:
    per_sample: torch.Tensor                       # [N]
    parts: dict[str, torch.Tensor] = field(default_factory=dict)   # 0-d, detached


def vp_noise(x0: torch.Tensor, logsnr: torch.Tensor, generator: torch.Generator | None):
    """Forward process z_a = sqrt(s(a)) x0 + sqrt(s(-a)) eps (docs/method.md section 1). Returns (z, eps)."""
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    view = (-1,) + (1,) * (x0.ndim - 1)
    z = torch.sigmoid(logsnr).sqrt().view(view) * x0 + torch.sigmoid(-logsnr).sqrt().view(view) * eps
    return z, eps


@dataclass
class EpsQuery:
    """Eps-view denoiser inputs a loss needs: z [N, *shape], log-SNR [N], labels [N] or None."""
    z: torch.Tensor
    logsnr: torch.Tensor
    labels: torch.Tensor | None = None


Finish = Callable[[torch.Tensor], LossOutput]


class QueryLoss:
    """A loss defined by its two-phase form: a call is `query`, one eps-view denoiser call, `finish`."""

    def __call__(self, denoiser, x0: torch.Tensor, *, generator: torch.Generator | None,
                 labels: torch.Tensor | None = None) -> LossOutput:
        query, finish = self.query(x0, generator=generator, labels=labels)
        return finish(denoiser.eps(query.z, query.logsnr, query.labels))


def batched_eps(denoiser, queries: list[EpsQuery]) -> list[torch.Tensor]:
    """Serve every query with ONE denoiser call on the rows of all of them, in order; returns each
    query's eps_hat [N_i, *shape]. The queries must all carry labels or all carry none."""
    with_labels = {q.labels is not None for q in queries}
    if len(with_labels) != 1:
        raise ValueError("batched_eps: either every query carries labels or none does")
    labels = torch.cat([q.labels for q in queries]) if with_labels == {True} else None
    out = denoiser.eps(torch.cat([q.z for q in queries]), torch.cat([q.logsnr for q in queries]), labels)
    return list(out.split([q.z.shape[0] for q in queries]))
