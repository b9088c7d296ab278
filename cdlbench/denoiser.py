"""The `Denoiser` protocol: one function, two views (DESIGN.md).

- `eps(z, logsnr)`: variance-preserving view, predicts the noise in z_a = sqrt(s(a)) x + sqrt(s(-a)) eps;
- `x0(x, sigma)`: variance-exploding (EDM) view, predicts the clean point of x = x0 + sigma * n.

They are related by (SPEC section 1)
    D(x_ve; sigma) = x_ve - sigma * eps_hat(x_ve / sqrt(1 + sigma^2), a = -2 log sigma).
Samplers, losses and metrics use a view; none branches on how the network was parameterised.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _per_sample(level: torch.Tensor | float, batch: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or [N] noise level to shape [N] on batch's device and dtype."""
    level = torch.as_tensor(level, dtype=batch.dtype, device=batch.device)
    if level.ndim == 0:
        return level.expand(batch.shape[0])
    return level.reshape(batch.shape[0])


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[N] -> [N, 1, ..., 1] to broadcast against like [N, *shape]."""
    return v.reshape(v.shape[0], *([1] * (like.ndim - 1)))


class Denoiser:
    """Wraps a network (or an analytic function) plus its parameterisation."""

    def __init__(self, eps_fn: EpsFn | None = None, x0_fn=None, module: nn.Module | None = None):
        if (eps_fn is None) == (x0_fn is None):
            raise ValueError("give exactly one of eps_fn, x0_fn")
        self._eps_fn = eps_fn
        self._x0_fn = x0_fn
        self.module = module if module is not None else (
            eps_fn if isinstance(eps_fn, nn.Module) else x0_fn if isinstance(x0_fn, nn.Module) else None)
        self.calls = 0  # number of batched evaluations (each call counts once)

    @classmethod
    def from_eps(cls, fn: EpsFn) -> "Denoiser":
        """Wrap `fn(z, logsnr) -> eps` (network or analytic)."""
        return cls(eps_fn=fn)

    @classmethod
    def from_x0(cls, fn) -> "Denoiser":
        """Wrap an EDM-style denoiser `fn(x, sigma) -> x0`."""
        return cls(x0_fn=fn)

    @classmethod
    def wrap(cls, module) -> "Denoiser":
        """Wrap a model by what it computes: `module.output == "x0"` (e.g. EDM-preconditioned,
        `module(x, sigma) -> x0`) or, by default, a noise predictor `module(z, logsnr) -> eps`."""
        if getattr(module, "output", "eps") == "x0":
            return cls.from_x0(module)
        return cls.from_eps(module)

    def eps(self, z: torch.Tensor, logsnr: torch.Tensor | float) -> torch.Tensor:
        """Noise prediction at VP point z [N, *shape] with log-SNR [N] or scalar."""
        a = _per_sample(logsnr, z)
        self.calls += 1
        if self._eps_fn is not None:
            return self._eps_fn(z, a)
        # eps from an EDM denoiser: x_ve = z / sqrt(s(a)), eps = (x_ve - D(x_ve; sigma)) / sigma
        sigma = torch.exp(-0.5 * a)
        x_ve = z * _expand(torch.sigmoid(a).rsqrt(), z)
        return (x_ve - self._x0_fn(x_ve, sigma)) / _expand(sigma, z)

    def x0(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """Clean-data prediction at VE point x [N, *shape] with noise level sigma [N] or scalar."""
        s = _per_sample(sigma, x)
        if self._x0_fn is not None:
            self.calls += 1
            return self._x0_fn(x, s)
        z = x * _expand(torch.rsqrt(1.0 + s * s), x)
        return x - _expand(s, x) * self.eps(z, -2.0 * torch.log(s))

    def parameters(self):
        return self.module.parameters() if self.module is not None else iter(())

    def accelerated(self, *, compile: bool = False, inference_mode: bool = True) -> "Denoiser":
        """The same function, for sampling only (no gradients): the wrapped network runs under
        `torch.inference_mode` and, with compile=True, through `torch.compile` (the first calls
        compile; later calls with new shapes may recompile). Outputs are ordinary tensors."""
        def fast(fn):
            return None if fn is None else _fast_call(fn, compile, inference_mode)
        return Denoiser(eps_fn=fast(self._eps_fn), x0_fn=fast(self._x0_fn), module=self.module)


def _fast_call(fn, compile: bool, inference_mode: bool):
    """fn(x, level) under torch.compile and/or torch.inference_mode."""
    if compile:
        fn = torch.compile(fn)
    if not inference_mode:
        return fn

    def call(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = fn(x, level)
        return out.clone()          # an inference tensor would refuse later in-place updates

    return call
