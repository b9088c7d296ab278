"""Time of one training step per loss (ddpm, itd, cdl at K = 2, B = 128), batch 128, Dino MLP."""
from __future__ import annotations

import torch

from .common import DEVICES, DINO_MODEL, build_loss, build_model, dino_batch, generator, require_device, \
    synchronize, train_step, wrap


class TrainStep:
    """forward + backward + Adam update of the Dino denoiser (width 128, 2 blocks) at batch 128."""

    params = (["ddpm", "itd", "cdl"], DEVICES)
    param_names = ["loss", "device"]

    def setup(self, loss: str, device: str):
        self.device = require_device(device)
        torch.manual_seed(0)
        self.x = dino_batch(128, seed=1, device=self.device)
        self.net = build_model(DINO_MODEL, self.device)
        self.denoiser = wrap(self.net)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.loss = build_loss(loss, torch.ones(2))
        self.gen = generator(2, self.device)
        for _ in range(3):                      # warm-up: first-call allocations off the clock
            train_step(self.denoiser, self.opt, self.loss, self.x, self.gen)
        synchronize(self.device)

    def time_step(self, loss: str, device: str):
        train_step(self.denoiser, self.opt, self.loss, self.x, self.gen)
        synchronize(self.device)
