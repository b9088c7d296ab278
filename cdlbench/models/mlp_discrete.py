"""Discrete-time MLP noise predictor, the kind of network the CDL authors' 2-D reference code
uses (docs/method.md section 7), re-derived from its description:

- the noise level enters as an integer DDPM step: the step t of the 1000-step linear-beta grid
  whose log-SNR a_t is nearest to the requested log-SNR a (so ITD's and CDL's continuous
  Monte-Carlo levels are rounded to the grid, as there);
- a fixed (not learned) sinusoidal table of t, e_t = [sin(t w_k), cos(t w_k)], w_k = 10000^(-k/h),
  k < h = emb_dim / 2 (Vaswani et al. 2017, section 3.5; Ho et al. 2020, appendix B);
- the table row is concatenated with z and mapped to `width` features, followed by `blocks`
  post-norm residual blocks h <- LayerNorm(h + GELU(W h + b)) and a linear read-out.

Width 128, 3 blocks, emb_dim 128 give 67,330 parameters (the residual `mlp`: 92k)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..constraints import positive
from ..diffusion.schedules import ddpm_logsnr
from ..registry import MODELS
from ..specs import ModelSpec


def nearest_step(logsnr: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Index of the grid level nearest to each log-SNR; grid strictly decreasing (a_0 > a_1 > ...)."""
    ascending = grid.flip(0)                                   # increasing, for searchsorted
    pos = torch.searchsorted(ascending, logsnr.contiguous().to(ascending.dtype)).clamp(1, grid.numel() - 1)
    lower, upper = ascending[pos - 1], ascending[pos]
    pick = torch.where((logsnr - lower).abs() <= (upper - logsnr).abs(), pos - 1, pos)
    return grid.numel() - 1 - pick                             # back to the decreasing grid's index


def step_table(num_steps: int, dim: int) -> torch.Tensor:
    """[num_steps, dim] fixed sinusoidal embedding of the integer steps 0..num_steps-1."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = torch.arange(num_steps, dtype=torch.float32).unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class PostNormBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h + nn.functional.gelu(self.fc(h)))


class DiscreteTimeMLP(nn.Module):
    """eps_hat = MLP([z, table[nearest step of logsnr]])."""

    num_classes = 0                       # unconditional

    def __init__(self, width: int = 128, blocks: int = 3, emb_dim: int = 128, num_steps: int = 1000,
                 shape: tuple = (2,)):
        super().__init__()
        self.shape = tuple(shape)
        d = int(math.prod(self.shape))
        self.register_buffer("grid", ddpm_logsnr(num_steps).float(), persistent=False)
        self.register_buffer("table", step_table(num_steps, emb_dim), persistent=False)
        self.inp = nn.Linear(d + emb_dim, width)
        self.blocks = nn.ModuleList(PostNormBlock(width) for _ in range(blocks))
        self.out = nn.Linear(width, d)

    def forward(self, z: torch.Tensor, logsnr: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.table[nearest_step(logsnr.reshape(-1), self.grid)]          # [N, emb_dim]
        h = self.inp(torch.cat([z.flatten(1), emb.to(z.dtype)], dim=1))
        for block in self.blocks:
            h = block(h)
        return self.out(h).reshape(z.shape)


@MODELS.register("mlp-discrete", constraints={"width": positive, "blocks": positive, "emb_dim": positive,
                                              "num_steps": positive},
                 spec=ModelSpec(data="points"))
def mlp_discrete(width: int = 128, blocks: int = 3, emb_dim: int = 128, num_steps: int = 1000,
                 shape: tuple = (2,)) -> nn.Module:
    """Discrete-time MLP (the CDL reference code's kind): integer step nearest to the log-SNR on the
    num_steps DDPM grid, fixed sinusoidal step table, post-norm GELU residual blocks; eps output."""
    if emb_dim % 2:
        raise ValueError(f"emb_dim must be even, got {emb_dim}")
    return DiscreteTimeMLP(width, blocks, emb_dim, num_steps, shape)
