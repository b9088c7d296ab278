"""Sampler protocol: `sample(denoiser, x_T, *, generator, **params) -> SampleResult` (DESIGN.md)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch


@dataclass
class SampleResult:
    samples: torch.Tensor            # [N, *shape]
    nfe: int                         # denoiser evaluations (one per time step and batch)
    iterations: int                  # sequential steps, or Picard passes
    converged: bool
    wall_s: float                    # sampling alone, device synchronised
    trace: list[torch.Tensor] | None = None   # Picard: final state after each iteration
    residuals: list[float] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # per-cell figures a spec declares (extra_figures), e.g. jvp


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Wall-clock with the device synchronised at both ends."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        synchronize(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.start
        return False


def standard_noise(noise: torch.Tensor | None, steps: int, x_T: torch.Tensor,
                   generator: torch.Generator | None) -> torch.Tensor:
    """Row j is the standard-normal draw of reverse step j; drawn from `generator` when not given."""
    if noise is None:
        return torch.randn((steps, *x_T.shape), generator=generator, device=x_T.device, dtype=x_T.dtype)
    if tuple(noise.shape) != (steps, *x_T.shape):
        raise ValueError(f"noise must have shape {(steps, *x_T.shape)}, got {tuple(noise.shape)}")
    return noise.to(device=x_T.device, dtype=x_T.dtype)


def eps_batched(denoiser, z: torch.Tensor, logsnr: torch.Tensor, chunk_size: int,
                labels: torch.Tensor | None = None) -> torch.Tensor:
    """Evaluate the eps view on many points in calls of at most chunk_size points (memory bound);
    labels [N] (or None) are the class labels of the rows of z."""
    if z.shape[0] <= chunk_size:
        return denoiser.eps(z, logsnr, labels)
    return torch.cat([denoiser.eps(z[i:i + chunk_size], logsnr[i:i + chunk_size],
                                   None if labels is None else labels[i:i + chunk_size])
                      for i in range(0, z.shape[0], chunk_size)])
