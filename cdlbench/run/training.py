"""Training loop: Adam with constant lr, optional EMA, seeded batches; stops on a NaN/Inf loss."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..denoiser import Denoiser


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or Inf; the cell stops with this reason."""


@dataclass
class TrainLog:
    steps: int = 0
    final_loss: float = float("nan")
    seconds: float = 0.0
    history: list = field(default_factory=list)     # (step, mean loss over the last log_every steps)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    for pe, p in zip(ema.parameters(), net.parameters()):
        pe.lerp_(p, 1.0 - decay)


def train(net: torch.nn.Module, loss_fn, data: torch.Tensor, cfg: dict, generator: torch.Generator,
          progress: bool = True, desc: str = "train", labels: torch.Tensor | None = None
          ) -> tuple[torch.nn.Module, TrainLog]:
    """Train `net` (an eps network) on `data` [n, *shape] with `loss_fn`; returns the network to
    sample from (the EMA copy when cfg['ema'] is set) and the log. Raises NonFiniteLoss.
    labels [n] (class of each training point) train a class-conditional network: each batch's
    labels go to the loss with it."""
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    ema = copy.deepcopy(net).requires_grad_(False) if cfg.get("ema") else None
    denoiser = Denoiser.wrap(net)   # eps or EDM-preconditioned (x0) network
    log = TrainLog()
    running, count = 0.0, 0
    start = time.perf_counter()
    bar = tqdm(range(cfg["steps"]), desc=desc, disable=not progress, leave=False, mininterval=1.0)
    for step in bar:
        idx = torch.randint(0, data.shape[0], (cfg["batch_size"],), generator=generator, device=data.device)
        if labels is None:
            out = loss_fn(denoiser, data[idx], generator=generator)
        else:
            out = loss_fn(denoiser, data[idx], generator=generator, labels=labels[idx])
        loss = out.per_sample.mean()
        value = loss.item()
        if not math.isfinite(value):
            raise NonFiniteLoss(f"loss became {value} at step {step} (parts: {out.parts})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema_update(ema, net, cfg["ema"])
        running, count = running + value, count + 1
        if count == cfg["log_every"] or step == cfg["steps"] - 1:
            log.history.append((step + 1, running / count))
            bar.set_postfix(loss=f"{running / count:.4f}")
            running, count = 0.0, 0
    log.steps, log.seconds = cfg["steps"], time.perf_counter() - start
    log.final_loss = log.history[-1][1] if log.history else float("nan")
    return (ema if ema is not None else net), log
