"""Components that inject faults, for tests/test_reliability.py only.

`register()` adds them to the global registries and `unregister()` removes them, so no other
test ever sees them. A subprocess gets them with
`python -c "import fault_components as f; f.register(); from cdlbench.cli import main; main()" ...`
(PYTHONPATH=tests)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from cdlbench.losses.base import LossOutput
from cdlbench.models.mlp import mlp
from cdlbench.registry import LOSSES, MODELS, SAMPLERS
from cdlbench.samplers.ddpm import ddpm_sample
from cdlbench.specs import SamplerSpec


class NaNLoss:
    """DDPM-like loss that turns NaN: the injected non-finite loss."""

    def __call__(self, denoiser, x0, *, generator):
        a = torch.zeros(x0.shape[0])
        per_sample = denoiser.eps(x0, a).pow(2).mean(1) * float("nan")
        return LossOutput(per_sample, {"mse": float("nan")})


def boom_sample(denoiser, x_T, *, generator=None, steps: int = 5):
    """A sampler that raises inside its cell."""
    raise RuntimeError("injected fault inside the sampler")


def slow_sample(denoiser, x_T, *, generator=None, noise=None, steps: int = 20):
    """DDPM sampler that first sleeps CDLBENCH_TEST_SLEEP seconds (a cell long enough to be killed in)."""
    time.sleep(float(os.environ.get("CDLBENCH_TEST_SLEEP", "0")))
    return ddpm_sample(denoiser, x_T, generator=generator, noise=noise, steps=steps)


def always_oom_sample(denoiser, x_T, *, generator=None, steps: int = 5, chunk_size: int = 1024):
    """Out of memory whatever the chunk size (the cell must fail after one retry)."""
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB (injected)")


class _MemoryBound(torch.nn.Module):
    """Wraps the MLP; a call on more than max_batch points raises torch.OutOfMemoryError."""

    def __init__(self, net: torch.nn.Module, max_batch: int):
        super().__init__()
        self.net, self.max_batch = net, max_batch

    def forward(self, z, a):
        if z.shape[0] > self.max_batch:
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected: {z.shape[0]} > {self.max_batch} points)")
        return self.net(z, a)


def memory_bound_mlp(width: int = 16, blocks: int = 1, max_batch: int = 300, shape: tuple = (2,), data_var=None):
    """MLP that runs out of memory above max_batch points per call."""
    return _MemoryBound(mlp(width=width, blocks=blocks, shape=shape, data_var=data_var), max_batch)


_COMPONENTS = [
    (LOSSES, "nan_loss", NaNLoss, None),
    (SAMPLERS, "boom", boom_sample, SamplerSpec(grid="ddpm", conditional=False)),
    (SAMPLERS, "slow_ddpm", slow_sample, SamplerSpec(grid="ddpm", noise="per_step", stochastic=True, conditional=False,
                                                     nfe=lambda p: (p["steps"], False))),
    (SAMPLERS, "always_oom", always_oom_sample, SamplerSpec(grid="ddpm", chunk_param="chunk_size", conditional=False,
                                                            points_per_call=lambda p, n: n * p["steps"])),
    (MODELS, "memory_bound_mlp", memory_bound_mlp, None)]


def register() -> None:
    for registry, name, obj, spec in _COMPONENTS:
        registry.names()                       # built-ins first
        registry.register(name, spec=spec)(obj)


def unregister() -> None:
    for registry, name, _, _ in _COMPONENTS:
        registry.unregister(name)


# A tiny valid suite (2 seeds x 2 losses x 2 samplers, seconds on CPU) shared by the
# reliability and validation tests.
TINY_SUITE = {
    "name": "tiny", "seeds": [0, 1], "device": "cpu",
    "dataset": {"name": "dino", "n_train": 500},
    "model": {"name": "mlp", "width": 16, "blocks": 1},
    "train": {"steps": 20, "batch_size": 32, "lr": 1.0e-3, "log_every": 10},
    "losses": [{"name": "ddpm"}, {"name": "itd"}],
    "samplers": [{"name": "picard", "steps": 20, "tolerance": 0.1}, {"name": "ddpm", "steps": 20}],
    "metrics": [{"name": "mmd", "bandwidth": 0.03, "n_samples": 100, "threshold": 2.0e-2}],
}


def flip_tensor_byte(path: Path, tensor: torch.Tensor) -> None:
    """Change one byte inside a stored tensor's data (bit rot the zip reader does not notice)."""
    raw = bytearray(path.read_bytes())
    needle = tensor.contiguous().view(torch.uint8).numpy().tobytes()
    at = raw.find(needle)
    assert at > 0
    raw[at + len(needle) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
