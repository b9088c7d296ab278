"""MMD^2 (unbiased, Gaussian kernel; docs/method.md section 5) between two sets of 2000 2-D points."""
from __future__ import annotations

import torch

from cdlbench.metrics.mmd import mmd2_unbiased

from .common import generator


class MMD:
    params = ([0.03, "median"],)
    param_names = ["bandwidth"]

    def setup(self, bandwidth):
        g = generator(0)
        self.x = torch.randn((2000, 2), generator=g)
        self.y = torch.randn((2000, 2), generator=g) + 0.1

    def time_mmd_2000x2000(self, bandwidth):
        mmd2_unbiased(self.x, self.y, bandwidth)
