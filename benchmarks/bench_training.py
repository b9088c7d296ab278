"""Time of one training step per loss (ddpm, itd, cdl at K = 2, B = 128), batch 128, Dino MLP;
and the cost of CDL relative to DDPM (one CDL step over one DDPM step, same model and batch)."""
from __future__ import annotations

import time

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


class CDLOverDDPM:
    """One CDL training step (K = 2, B = 128) over one DDPM step, same denoiser and batch 128:
    what the contrastive term costs, as a ratio that does not move with the machine's speed.
    Each loss gets the best of REPEATS blocks of STEPS steps, the blocks of the two losses
    interleaved so that a change of load hits both."""

    params = (DEVICES,)
    param_names = ["device"]
    timeout = 300
    REPEATS, STEPS = 7, 10

    def setup(self, device: str):
        self.device = require_device(device)
        self.steps = {}
        for loss in ("ddpm", "cdl"):
            bench = TrainStep()
            bench.setup(loss, device)           # same model init, batch and warm-up as TrainStep
            self.steps[loss] = bench

    def _block(self, loss: str) -> float:
        b = self.steps[loss]
        start = time.perf_counter()
        for _ in range(self.STEPS):
            train_step(b.denoiser, b.opt, b.loss, b.x, b.gen)
        synchronize(self.device)
        return (time.perf_counter() - start) / self.STEPS

    def track_cdl_step_over_ddpm_step(self, device: str):
        best = {"ddpm": float("inf"), "cdl": float("inf")}
        for _ in range(self.REPEATS):
            for loss in best:
                best[loss] = min(best[loss], self._block(loss))
        return best["cdl"] / best["ddpm"]

    track_cdl_step_over_ddpm_step.unit = "ratio"
