"""Sampler benchmarks on a fixed small model: one full-window Picard pass (1000 steps x 2000
2-D samples), every registered sampler end to end, and the peak memory of a Picard run."""
from __future__ import annotations

import torch

from cdlbench import SAMPLERS

from .common import DEVICES, SMALL_MODEL, build_model, generator, require_device, sampler_names, \
    sampler_params, synchronize, wrap


class PicardIteration:
    """One Picard iteration (ParaDiGMS; docs/method.md section 4) over the whole 1000-step window:
    2 M denoiser evaluations in chunked batched calls plus the cumulative-sum update."""

    params = (DEVICES,)
    param_names = ["device"]
    number = 1
    repeat = (1, 3, 60.0)
    warmup_time = 0.0
    timeout = 600

    def setup(self, device: str):
        self.device = require_device(device)
        self.denoiser = wrap(build_model(SMALL_MODEL, self.device).eval())
        g = generator(0, self.device)
        self.x_T = torch.randn((2000, 2), generator=g, device=self.device)
        self.noise = torch.randn((1000, 2000, 2), generator=g, device=self.device)

    def time_one_iteration(self, device: str):
        SAMPLERS["picard"](self.denoiser, self.x_T, noise=self.noise, steps=1000, window=1000,
                           tolerance=0.1, max_iters=1)
        synchronize(self.device)


class SamplerEndToEnd:
    """Each registered sampler (names read from the registry) on 500 samples of a small model."""

    params = (sampler_names(),)
    param_names = ["sampler"]
    timeout = 300

    def setup(self, sampler: str):
        self.denoiser = wrap(build_model(SMALL_MODEL).eval())
        self.x_T = torch.randn((500, 2), generator=generator(0))
        self.params = sampler_params(sampler)
        self.fn = SAMPLERS[sampler]

    def time_sample(self, sampler: str):
        self.fn(self.denoiser, self.x_T, generator=generator(1), **self.params)


class PicardMemory:
    """Peak resident memory of a Picard run (the trajectory [T+1, N, 2] plus the chunked calls)."""

    timeout = 300

    def setup(self):
        self.denoiser = wrap(build_model(SMALL_MODEL).eval())
        self.x_T = torch.randn((2000, 2), generator=generator(0))

    def peakmem_picard_run(self):
        SAMPLERS["picard"](self.denoiser, self.x_T, generator=generator(1), steps=200, tolerance=0.1,
                           max_iters=20)
