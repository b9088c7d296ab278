"""Numbers, not speed: Picard iterations and final MMD of tiny Dino models trained once (setup_cache)
with the DDPM loss and with CDL. Training and sampling are seeded, so a change that alters
these numbers shows as a step in asv's graphs."""
from __future__ import annotations

import torch

from cdlbench import DATASETS, SAMPLERS
from cdlbench.metrics.mmd import mmd2_unbiased
from cdlbench.run.training import train

from .common import build_loss, build_model, generator, wrap

TINY_MODEL = {"width": 32, "blocks": 1}
TRAIN = {"steps": 300, "batch_size": 128, "lr": 2e-3, "ema": None, "log_every": 100}
N_SAMPLES, STEPS, TOLERANCE, BANDWIDTH = 1000, 200, 0.1, 0.03


def _train_tiny(loss_name: str) -> dict:
    torch.set_num_threads(1)                        # the same float reductions on every machine size
    data = DATASETS.build("dino", {"n_train": 20_000}).train_data(generator(0)).float()
    net = build_model(TINY_MODEL, seed=0)
    loss = build_loss(loss_name, data.var(0, unbiased=False))
    trained, _ = train(net, loss, data, TRAIN, generator(1), progress=False)
    return {k: v.clone() for k, v in trained.state_dict().items()}


def _picard(state: dict):
    net = build_model(TINY_MODEL)
    net.load_state_dict(state)
    x_T = torch.randn((N_SAMPLES, 2), generator=generator(2))
    return SAMPLERS["picard"](wrap(net.eval()), x_T, generator=generator(3), steps=STEPS, tolerance=TOLERANCE)


class TinyDinoPicard:
    params = (["ddpm", "cdl"],)
    param_names = ["loss"]
    timeout = 600

    def setup_cache(self):
        return {name: _train_tiny(name) for name in self.params[0]}

    def setup(self, states, loss):
        self.result = _picard(states[loss])
        self.reference = DATASETS.build("dino", {"n_train": N_SAMPLES}).train_data(generator(4)).float()

    def track_picard_iterations(self, states, loss):
        return self.result.iterations

    track_picard_iterations.unit = "iterations"
    track_picard_iterations.deterministic = True     # CI fails when it changes (benchmarks/check_regressions.py)

    def track_final_mmd(self, states, loss):
        return mmd2_unbiased(self.result.samples, self.reference, BANDWIDTH)

    track_final_mmd.unit = "MMD^2 (bw 0.03)"
    track_final_mmd.deterministic = True
