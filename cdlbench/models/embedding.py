"""Sinusoidal embedding of a continuous noise level (log-SNR), as in Transformer/DDPM time
embeddings but on a real-valued input, so a network can be asked for any a (docs/method.md section 1)."""
from __future__ import annotations

import math

import torch


def sinusoidal_embedding(logsnr: torch.Tensor, dim: int, max_period: float = 200.0) -> torch.Tensor:
    """[N] -> [N, dim]: sin/cos of logsnr at geometric frequencies from 1 down to 1/max_period."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=logsnr.device, dtype=torch.float32) / half)
    args = logsnr.float().unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)
