"""Time of one training step per loss (ddpm, itd, cdl at K = 2, B = 128), batch 128, Dino MLP;
and the cost of CDL relative to DDPM (one CDL step over one DDPM step, same model and batch), with
the base loss's evaluations in their own denoiser call (as the shipped suites train) and joined to
the classifier's (`one_call: true`)."""
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
        for name, loss in (("ddpm", "ddpm"), ("cdl", "cdl"), ("cdl-one-call", "cdl")):
            bench = TrainStep()
            bench.setup(loss, device)           # same model init, batch and warm-up as TrainStep
            self.steps[name] = bench
        one_call = self.steps["cdl-one-call"]
        one_call.loss = build_loss("cdl", torch.ones(2), one_call=True)
        for _ in range(3):
            train_step(one_call.denoiser, one_call.opt, one_call.loss, one_call.x, one_call.gen)

    def _block(self, loss: str) -> float:
        b = self.steps[loss]
        start = time.perf_counter()
        for _ in range(self.STEPS):
            train_step(b.denoiser, b.opt, b.loss, b.x, b.gen)
        synchronize(self.device)
        return (time.perf_counter() - start) / self.STEPS

    def _ratio(self, loss: str) -> float:
        best = {"ddpm": float("inf"), loss: float("inf")}
        for _ in range(self.REPEATS):
            for name in best:
                best[name] = min(best[name], self._block(name))
        return best[loss] / best["ddpm"]

    def track_cdl_step_over_ddpm_step(self, device: str):
        return self._ratio("cdl")

    track_cdl_step_over_ddpm_step.unit = "ratio"

    def track_cdl_one_call_step_over_ddpm_step(self, device: str):
        return self._ratio("cdl-one-call")

    track_cdl_one_call_step_over_ddpm_step.unit = "ratio"
