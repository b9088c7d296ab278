"""The `Denoiser` protocol: one function, two views (DESIGN.md).

- `eps(z, logsnr)`: variance-preserving view, predicts the noise in z_a = sqrt(s(a)) x + sqrt(s(-a)) eps;
- `x0(x, sigma)`: variance-exploding (EDM) view, predicts the clean point of x = x0 + sigma * n.

Both take optional `labels` [N] (int64 class of each row) for a class-conditional network: one
whose `num_classes` attribute is > 0 and whose forward accepts `class_labels=`. The caller lays
labels out row by row exactly as it lays out the points (Picard tiles them per window, ITD and
CDL repeat them per Monte-Carlo point); unconditional calls pass no labels.

They are related by (docs/method.md section 1)
    D(x_ve; sigma) = x_ve - sigma * eps_hat(x_ve / sqrt(1 + sigma^2), a = -2 log sigma).
Samplers, losses and metrics use a view; none branches on how the network was parameterised.

A `NoiseLevelCounter` attached as `denoiser.levels` counts the evaluations (rows of every
batched call) and those at a log-SNR outside a training range, in either view (the x0 view at
a = -2 log sigma); the runner's diagnostic `ood_eval_share` (docs/metrics.md).
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


class NoiseLevelCounter:
    """Evaluations of a denoiser and those at a log-SNR outside [lo, hi] (with a slack of RANGE_SLACK
    for the rounding of float32 grids), summed as tensors on the calls' device: no host sync per call."""

    #: log-SNR units a level may lie beyond [lo, hi] and still count as inside (float32 rounding of grid ends)
    RANGE_SLACK = 1e-3

    def __init__(self, lo: float, hi: float):
        self.lo, self.hi = float(lo), float(hi)
        self.reset()

    def reset(self) -> None:
        self.total = 0                                  # rows: known from shapes, no sync
        self.outside: torch.Tensor | int = 0

    def add(self, logsnr: torch.Tensor) -> None:
        """Count one batched call at the log-SNRs [N] of its rows."""
        a = logsnr.detach()
        self.total += a.numel()
        self.outside = self.outside + ((a < self.lo - self.RANGE_SLACK) | (a > self.hi + self.RANGE_SLACK)).sum()

    def share(self) -> float:
        """Outside / total (NaN before any evaluation)."""
        return float(self.outside) / self.total if self.total else float("nan")


class Denoiser:
    """Wraps a network (or an analytic function) plus its parameterisation."""

    def __init__(self, eps_fn: EpsFn | None = None, x0_fn=None, module: nn.Module | None = None,
                 num_classes: int | None = None):
        if (eps_fn is None) == (x0_fn is None):
            raise ValueError("give exactly one of eps_fn, x0_fn")
        self._eps_fn = eps_fn
        self._x0_fn = x0_fn
        self.module = module if module is not None else (
            eps_fn if isinstance(eps_fn, nn.Module) else x0_fn if isinstance(x0_fn, nn.Module) else None)
        self.calls = 0  # number of batched evaluations (each call counts once)
        self.levels: NoiseLevelCounter | None = None   # counts evaluations by noise level when set
        # classes of a class-conditional function (0: unconditional): given, or the network's own
        self.num_classes = int(num_classes if num_classes is not None else getattr(self.module, "num_classes", 0) or 0)

    @classmethod
    def from_eps(cls, fn: EpsFn, num_classes: int | None = None) -> "Denoiser":
        """Wrap `fn(z, logsnr) -> eps` (network or analytic; with num_classes > 0 it also takes class_labels=)."""
        return cls(eps_fn=fn, num_classes=num_classes)

    @classmethod
    def from_x0(cls, fn, num_classes: int | None = None) -> "Denoiser":
        """Wrap an EDM-style denoiser `fn(x, sigma) -> x0`."""
        return cls(x0_fn=fn, num_classes=num_classes)

    @classmethod
    def wrap(cls, module) -> "Denoiser":
        """Wrap a model by what it computes: `module.output == "x0"` (e.g. EDM-preconditioned,
        `module(x, sigma) -> x0`) or, by default, a noise predictor `module(z, logsnr) -> eps`."""
        if getattr(module, "output", "eps") == "x0":
            return cls.from_x0(module)
        return cls.from_eps(module)

    def eps(self, z: torch.Tensor, logsnr: torch.Tensor | float, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Noise prediction at VP point z [N, *shape] with log-SNR [N] or scalar (labels [N] or None)."""
        a = _per_sample(logsnr, z)
        self.calls += 1
        if self.levels is not None:
            self.levels.add(a)
        if self._eps_fn is not None:
            return _call(self._eps_fn, z, a, labels)
        # eps from an EDM denoiser: x_ve = z / sqrt(s(a)), eps = (x_ve - D(x_ve; sigma)) / sigma
        sigma = torch.exp(-0.5 * a)
        x_ve = z * _expand(torch.sigmoid(a).rsqrt(), z)
        return (x_ve - _call(self._x0_fn, x_ve, sigma, labels)) / _expand(sigma, z)

    def x0(self, x: torch.Tensor, sigma: torch.Tensor | float, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Clean-data prediction at VE point x [N, *shape] with noise level sigma [N] or scalar (labels [N] or None)."""
        s = _per_sample(sigma, x)
        if self._x0_fn is not None:
            self.calls += 1
            if self.levels is not None:                 # a = -2 log sigma (docs/method.md section 1)
                self.levels.add(-2.0 * torch.log(s))
            return _call(self._x0_fn, x, s, labels)
        z = x * _expand(torch.rsqrt(1.0 + s * s), x)
        return x - _expand(s, x) * self.eps(z, -2.0 * torch.log(s), labels)

    def parameters(self):
        return self.module.parameters() if self.module is not None else iter(())

    def accelerated(self, *, compile: bool = False, inference_mode: bool = True) -> "Denoiser":
        """The same function, for sampling only (no gradients): the wrapped network runs under
        `torch.inference_mode` and, with compile=True, through `torch.compile` (the first calls
        compile; later calls with new shapes may recompile). Outputs are ordinary tensors."""
        def fast(fn):
            return None if fn is None else _fast_call(fn, compile, inference_mode)
        out = Denoiser(eps_fn=fast(self._eps_fn), x0_fn=fast(self._x0_fn), module=self.module,
                       num_classes=self.num_classes)
        out.levels = self.levels
        return out


def _call(fn, x: torch.Tensor, level: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """fn(x, level), with class_labels= only for a labelled call (unconditional functions never see it)."""
    if labels is None:
        return fn(x, level)
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},) (one per row), got {tuple(labels.shape)}")
    return fn(x, level, class_labels=labels)


def _fast_call(fn, compile: bool, inference_mode: bool):
    """fn(x, level, **labels) under torch.compile and/or torch.inference_mode."""
    compiled = torch.compile(fn) if compile else fn
    if not inference_mode:
        call = compiled
    else:
        def call(x: torch.Tensor, level: torch.Tensor, **labels) -> torch.Tensor:
            with torch.inference_mode():
                out = compiled(x, level, **labels)
            return out.clone()          # an inference tensor would refuse later in-place updates
    return call
