"""Parallel-sampler benchmarks (docs/method.md sections 4.4-4.5): one round of each update rule
on the shared engine (full window of 200 steps x 500 2-D samples, the fixed small MLP), and the
warm starts. A round is the engine's `one_pass`: the batched denoiser call (plus the JVPs for
newton), the Picard values, the convergence test and the rule's update (TAA: after one round, so
its history is primed; newton: the scan or the damped Kalman smoother)."""
from __future__ import annotations

import torch

from cdlbench.samplers.newton import NewtonUpdate
from cdlbench.samplers.parallel_engine import UpdateRule, build_problem, one_pass
from cdlbench.samplers.taa import TriangularAnderson
from cdlbench.samplers.warm_start import anchor_steps, initial_trajectory

from .common import DEVICES, SMALL_MODEL, build_model, generator, require_device, synchronize, wrap

STEPS, SAMPLES = 200, 500

RULES = {
    "picard": lambda: UpdateRule(),
    "taa-3": lambda: TriangularAnderson(3, 1e-3),
    "newton-exact": lambda: NewtonUpdate("exact", 0.0),
    "newton-diagonal": lambda: NewtonUpdate("diagonal", 0.0),
    "newton-damped": lambda: NewtonUpdate("exact", 0.1),
}


def _problem(device: torch.device):
    denoiser = wrap(build_model(SMALL_MODEL, device).eval())
    g = generator(0, device)
    x_T = torch.randn((SAMPLES, 2), generator=g, device=device)
    noise = torch.randn((STEPS, SAMPLES, 2), generator=g, device=device)
    problem = build_problem(denoiser, x_T, drift="ddpm", steps=STEPS, variance="posterior", noise=noise,
                            generator=None, chunk_size=1 << 18, class_labels=None)
    return problem, x_T


class ParallelRound:
    """One full-window round of each update rule (repeated rounds keep updating the same iterate,
    each a valid round at window start 0)."""

    params = (list(RULES), DEVICES)
    param_names = ["rule", "device"]
    number = 1
    repeat = (1, 5, 30.0)
    warmup_time = 0.0
    timeout = 300

    def setup(self, rule: str, device: str):
        self.device = require_device(device)
        self.problem, x_T = _problem(self.device)
        self.X = x_T.unsqueeze(0).repeat(STEPS + 1, 1, 1)
        self.rule = RULES[rule]()
        with torch.no_grad():
            self.rule.start(self.problem, self.X)
            one_pass(self.problem, self.X, 0, STEPS, self.rule, 0.1)         # primes TAA's history

    def time_one_round(self, rule: str, device: str):
        with torch.no_grad():
            one_pass(self.problem, self.X, 0, STEPS, self.rule, 0.1)
        synchronize(self.device)


class WarmStart:
    """The starting trajectories: frozen_x0 (1 warm-up call) and coarse (10 calls), each followed by
    the call-free fill of the remaining states."""

    params = (["frozen_x0", "coarse"],)
    param_names = ["init"]
    timeout = 120

    def setup(self, init: str):
        self.problem, self.x_T = _problem(torch.device("cpu"))
        self.anchors = anchor_steps(init, STEPS, warmup_steps=1, coarse_steps=10)

    def time_initial_trajectory(self, init: str):
        with torch.no_grad():
            initial_trajectory(self.problem, self.x_T, self.anchors)
