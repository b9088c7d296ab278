"""Cheap 2-D toy sets: two moons, checkerboard, eight Gaussians (the last with an exact score)."""
from __future__ import annotations

import math

import torch

from ..registry import DATASETS
from ..specs import DatasetSpec
from .base import Dataset
from .mixture import GaussianMixture


@DATASETS.register("moons")
class Moons(Dataset):
    """Two interleaving half circles with Gaussian noise, centred."""

    def __init__(self, n_train: int = 100_000, noise: float = 0.05):
        super().__init__(n_train)
        self.noise = float(noise)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        upper = torch.rand(n, generator=generator) < 0.5
        theta = math.pi * torch.rand(n, generator=generator)
        x = torch.where(upper, torch.cos(theta), 1.0 - torch.cos(theta))
        y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
        pts = torch.stack([x - 0.5, y - 0.25], dim=1) * 2.0
        return pts + self.noise * torch.randn((n, 2), generator=generator)


@DATASETS.register("checkerboard")
class Checkerboard(Dataset):
    """Uniform on the dark squares of a 4x4 board over [-2, 2]^2."""

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        x1 = 4.0 * torch.rand(n, generator=generator) - 2.0
        col = torch.randint(0, 2, (n,), generator=generator).float() * 2.0
        x2 = torch.rand(n, generator=generator) - col + torch.floor(x1) % 2   # in [-2, 2]
        return torch.stack([x1, x2], dim=1)


@DATASETS.register("8gaussians", spec=DatasetSpec(labelled=True, exact_score=True, classifier=True,
                                                  exact_density=True))   # class = mixture component
class EightGaussians(GaussianMixture):
    """Eight equal Gaussians on a circle (radius 2, std 0.2), exact score known; class = component."""

    def __init__(self, n_train: int = 100_000, radius: float = 2.0, std: float = 0.2):
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
        super().__init__(means, std ** 2, n_train=n_train)
