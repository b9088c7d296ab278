"""Loss protocol: `loss(denoiser, x0, *, generator, labels=None) -> LossOutput(per_sample, parts)`
(labels [N]: the class of each row of x0, given only to a class-conditional denoiser).

Unreduced: the trainer takes `per_sample.mean()`; `parts` holds scalar diagnostics as detached
0-d tensors (reading them back would wait for the GPU on every step; the trainer does not)."""
from __future__ import annotations

from dataclasses import dataclass, field

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
