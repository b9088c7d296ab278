"""Residual MLP noise predictor eps_theta(z, a) for point clouds, conditioned on continuous log-SNR
(docs/method.md section 6: width 128, 2 blocks, sinusoidal embedding)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..constraints import one_of, positive
from ..registry import MODELS
from ..specs import ModelSpec
from .conditioning import conditional_classes, with_class
from .embedding import sinusoidal_embedding
from .precond import PRECONDS, precondition


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.act = nn.SiLU()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(self.act(self.fc1(self.act(self.norm(h) + emb))))


class ResidualMLP(nn.Module):
    """Residual MLP on flattened points: eps_hat = MLP(z, emb(logsnr) [+ emb(class)])."""

    def __init__(self, width: int = 128, blocks: int = 2, emb_dim: int = 64, shape: tuple = (2,),
                 num_classes: int = 0):
        super().__init__()
        self.num_classes = int(num_classes)
        # class-conditional: a learned class embedding is added to the noise-level embedding
        self.class_embed = nn.Embedding(self.num_classes, width) if self.num_classes else None
        self.shape = tuple(shape)
        d = int(math.prod(self.shape))
        self.emb_dim = emb_dim
        self.embed = nn.Sequential(nn.Linear(emb_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Linear(d, width)
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, d))

    def _embed_levels(self, logsnr: torch.Tensor) -> torch.Tensor:
        """[N] -> [N, width]. Samplers evaluate many points at few noise levels (Picard: W levels
        for W x N points), so large calls embed each distinct level once and gather (same values,
        about a fifth less work); small training batches skip the sort."""
        if logsnr.numel() < 8192:
            return self.embed(sinusoidal_embedding(logsnr, self.emb_dim))
        levels, index = torch.unique(logsnr, return_inverse=True)               # [U], [N]
        return self.embed(sinusoidal_embedding(levels, self.emb_dim))[index]

    def forward(self, z: torch.Tensor, logsnr: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self._embed_levels(logsnr)                                         # [N, width]
        emb = with_class(emb, self.class_embed, class_labels)
        h = self.inp(z.flatten(1))                                               # [N, width]
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h).reshape(z.shape)


@MODELS.register("mlp", constraints={"width": positive, "blocks": positive, "emb_dim": positive,
                                     "precond": one_of(*PRECONDS), "sigma_data": positive},
                 spec=ModelSpec(conditional=lambda p: bool(p["conditional"])), neutral={"conditional": False})
def mlp(width: int = 128, blocks: int = 2, emb_dim: int = 64, precond: str = "eps",
        sigma_data: float | None = None, conditional: bool = False, shape: tuple = (2,), data_var=None,
        num_classes: int = 0) -> nn.Module:
    """Residual MLP on flattened points, conditioned on log-SNR; precond: eps (noise predictor) or
    edm (EDM's c_skip/c_out/c_in wrapper; sigma_data defaults to the data's RMS std);
    conditional: also on the class label (the dataset's classes)."""
    classes = conditional_classes(conditional, num_classes, "mlp")
    return precondition(ResidualMLP(width, blocks, emb_dim, shape, classes), precond, sigma_data, data_var)
