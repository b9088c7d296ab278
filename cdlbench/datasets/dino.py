"""Datasaurus Dozen "dino" (Matejka and Fitzmaurice, CHI 2017), docs/method.md section 6 preprocessing:
jitter N(0, 0.15^2) on raw coordinates, x -> (x/54 - 1)*4, y -> (y/48 - 1)*4, standardise each axis.
The 142 raw points ship in data/dino.csv (provenance in its header)."""
from __future__ import annotations

from importlib import resources

import numpy as np
import torch

from ..registry import DATASETS
from .base import Dataset


def load_dino_points() -> torch.Tensor:
    """The 142 raw (x, y) points, float64 [142, 2]."""
    text = resources.files("cdlbench.datasets").joinpath("data/dino.csv").read_text()
    rows = [line.split(",") for line in text.splitlines() if line and not line.startswith(("#", "x"))]
    return torch.tensor(np.asarray(rows, dtype=np.float64))


_SCALE = torch.tensor([4.0 / 54.0, 4.0 / 48.0], dtype=torch.float64)
_SHIFT = torch.tensor([-4.0, -4.0], dtype=torch.float64)


@DATASETS.register("dino")
class Dino(Dataset):
    """Datasaurus dino, 142 points jittered and standardised (2-D)."""

    shape = (2,)

    def __init__(self, n_train: int = 100_000, jitter: float = 0.15):
        super().__init__(n_train)
        self.jitter = float(jitter)
        mapped = load_dino_points() * _SCALE + _SHIFT
        # Standardise with the exact moments of the jittered law (population variance of the
        # 142 mapped points plus the mapped jitter variance), so every draw shares one map.
        self._mean = mapped.mean(0)
        var = mapped.var(0, unbiased=False) + (self.jitter * _SCALE) ** 2
        self._std = var.sqrt()
        self._points = mapped

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, self._points.shape[0], (n,), generator=generator)
        noise = torch.randn((n, 2), generator=generator, dtype=torch.float64) * (self.jitter * _SCALE)
        return ((self._points[idx] + noise - self._mean) / self._std).float()
