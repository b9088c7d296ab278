"""A small U-Net noise predictor eps_theta(z, a) for images (Ronneberger et al. 2015, in the
DDPM form of Ho et al. 2020, sec. 4 and appendix B: residual blocks with GroupNorm and SiLU,
the noise-level embedding added inside every block, optional self-attention at the coarsest
level), conditioned on the continuous log-SNR a (docs/method.md section 1) instead of an integer step.

Optional class conditioning (`conditional: true`, models/conditioning.py): a learned embedding of
the dataset's class label is added to the noise-level embedding."""
from __future__ import annotations

import torch
from torch import nn

from ..registry import MODELS
from ..specs import ModelSpec
from .conditioning import conditional_classes, with_class
from .embedding import sinusoidal_embedding


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    """h + conv(act(norm(conv(act(norm(h))) + emb)))  (DDPM's residual block)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:   # h [N, C, H, W], emb [N, E]
        out = self.conv1(self.act(self.norm1(h))) + self.emb(emb)[:, :, None, None]
        out = self.conv2(self.drop(self.act(self.norm2(out))))
        return self.skip(h) + out


class SelfAttention(nn.Module):
    """Single-head spatial self-attention with a residual connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, c, hh, ww = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(n, 3, c, hh * ww).unbind(1)          # [N, C, HW] each
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))                  # [N, HW, C]
        return h + self.proj(out.transpose(1, 2).reshape(n, c, hh, ww))


def _channels_ok(v):
    return None if isinstance(v, (list, tuple)) and v and all(isinstance(c, int) and c > 0 for c in v) \
        else "must be a non-empty list of positive integers, one per resolution level"


@MODELS.register("unet", constraints={"channels": _channels_ok,
                                      "blocks": lambda v: None if v >= 1 else "must be >= 1",
                                      "dropout": lambda v: None if 0 <= v < 1 else "must be in [0, 1)"},
                 spec=ModelSpec(data="images", conditional=lambda p: bool(p["conditional"])), neutral={"conditional": False})
class UNet(nn.Module):
    """Small U-Net on [N, C, H, W] conditioned on continuous log-SNR; optional class labels."""

    def __init__(self, channels: list = (32, 64), blocks: int = 1, attention: bool = False,
                 emb_dim: int = 128, dropout: float = 0.0, conditional: bool = False, shape: tuple = (1, 8, 8),
                 num_classes: int = 0):
        super().__init__()
        self.shape = tuple(shape)
        if len(self.shape) != 3:
            raise ValueError(f"unet needs image data [C, H, W], got sample shape {self.shape}")
        c_img, height, width = self.shape
        levels = len(channels)
        if height % 2 ** (levels - 1) or width % 2 ** (levels - 1):
            raise ValueError(f"unet with {levels} levels needs H and W divisible by {2 ** (levels - 1)}, "
                             f"got {height}x{width}")
        self.emb_dim, self.num_classes = int(emb_dim), conditional_classes(conditional, num_classes, "unet")
        self.embed = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_embed = nn.Embedding(self.num_classes, emb_dim) if self.num_classes else None
        self.inp = nn.Conv2d(c_img, channels[0], 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, c = [channels[0]], channels[0]
        for i, ch in enumerate(channels):
            for _ in range(blocks):
                self.down.append(ResBlock(c, ch, emb_dim, dropout))
                c = ch
                skips.append(c)
            if i < levels - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid1 = ResBlock(c, c, emb_dim, dropout)
        self.mid_attn = SelfAttention(c) if attention else nn.Identity()
        self.mid2 = ResBlock(c, c, emb_dim, dropout)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, ch in reversed(list(enumerate(channels))):
            for _ in range(blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), ch, emb_dim, dropout))
                c = ch
            if i > 0:
                self.upsample.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                   nn.Conv2d(c, c, 3, padding=1)))
        self.out = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, c_img, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.blocks, self.levels = int(blocks), levels

    def forward(self, z: torch.Tensor, logsnr: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(sinusoidal_embedding(logsnr, self.emb_dim))                # [N, E]
        emb = with_class(emb, self.class_embed, class_labels)
        h = self.inp(z)
        hs = [h]
        blocks = iter(self.down)
        for i in range(self.levels):
            for _ in range(self.blocks):
                h = next(blocks)(h, emb)
                hs.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        blocks = iter(self.up)
        for j in range(self.levels):
            for _ in range(self.blocks + 1):
                h = next(blocks)(torch.cat([h, hs.pop()], dim=1), emb)
            if j < self.levels - 1:
                h = self.upsample[j](h)
        return self.out(h)
