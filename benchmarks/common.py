"""Shared fixtures of the asv benchmarks: small seeded models, data and sampler settings.

Everything is CPU-sized (a 2-core machine runs `asv run --quick` in a few minutes) and seeded,
so a change that alters the numbers (not only the speed) shows as a step in the graphs."""
from __future__ import annotations

import inspect
import os

import torch

import cdlbench.registry; cdlbench.registry.load_components()  # noqa: F401  (registers the built-in components)
from cdlbench import LOSSES, MODELS, SAMPLERS, Denoiser

# One intra-op thread by default: on a shared or small machine, several threads per benchmark
# make the timings swing with the load. CDLBENCH_BENCH_THREADS=0 keeps torch's own choice.
_THREADS = int(os.environ.get("CDLBENCH_BENCH_THREADS", "1"))
if _THREADS > 0:
    torch.set_num_threads(_THREADS)

#: devices a benchmark is parameterised over; GPU variants are skipped without a GPU
DEVICES = ["cpu", "cuda"]

#: the Dino denoiser of docs/method.md section 6 (residual MLP, width 128, 2 blocks)
DINO_MODEL = {"width": 128, "blocks": 2}
#: a fixed small model for the sampling benchmarks (fast enough for 2 M points per pass)
SMALL_MODEL = {"width": 32, "blocks": 1}

#: CDL as in the paper's 2-D runs: K = 2 samples per batch, B = 128 Monte-Carlo points
LOSS_PARAMS = {
    "ddpm": {},
    "itd": {},
    "cdl": {"base": "itd", "weight": 1.0, "samples_per_batch": 2, "mc_points": 128},
}

#: sensible end-to-end settings per sampler; samplers not listed get DEFAULT_SAMPLER_PARAMS
#: (each parameter only if the sampler accepts it)
SAMPLER_PARAMS = {
    "ddpm": {"steps": 50},
    "picard": {"steps": 50, "tolerance": 0.1},
    "ddim": {"steps": 25},
    "euler": {"steps": 25},
    "heun": {"steps": 10},
}
DEFAULT_SAMPLER_PARAMS = {"steps": 25}


def require_device(device: str) -> torch.device:
    """The torch device, or NotImplementedError (asv's "skipped") when it is not available."""
    if device == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA device")
    return torch.device(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def wrap(net: torch.nn.Module) -> Denoiser:
    """The Denoiser for a network (by what the network predicts)."""
    return getattr(Denoiser, "wrap", Denoiser.from_eps)(net)


def build_model(params: dict, device: torch.device | str = "cpu", seed: int = 0, shape=(2,)) -> torch.nn.Module:
    """A freshly initialised registered `mlp` (init is seeded through the global RNG)."""
    torch.manual_seed(seed)
    return MODELS.build("mlp", dict(params), shape=tuple(shape)).to(device)


def build_loss(name: str, data_var: torch.Tensor, shape=(2,), **overrides):
    """The benchmark's loss `name` (LOSS_PARAMS), with `overrides` of its parameters."""
    return LOSSES.build(name, {**LOSS_PARAMS.get(name, {}), **overrides}, data_var=data_var, shape=tuple(shape))


def sampler_params(name: str) -> dict:
    """The benchmark settings for a registered sampler, restricted to what it accepts."""
    accepted = inspect.signature(SAMPLERS[name]).parameters
    params = SAMPLER_PARAMS.get(name, DEFAULT_SAMPLER_PARAMS)
    return {k: v for k, v in params.items() if k in accepted}


def sampler_names() -> list[str]:
    """Every registered sampler (so new samplers are benchmarked without editing this file)."""
    return list(SAMPLERS.names())


def dino_batch(n: int, seed: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """n standardised Dino points [n, 2]."""
    from cdlbench import DATASETS
    return DATASETS.build("dino", {"n_train": n}).sample(n, generator(seed)).float().to(device)


def train_step(denoiser: Denoiser, optimizer: torch.optim.Optimizer, loss_fn, x: torch.Tensor,
               gen: torch.Generator) -> torch.Tensor:
    """One optimiser step of training.train (loss, backward, Adam), without the loop around it."""
    loss = loss_fn(denoiser, x, generator=gen).per_sample.mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()
