"""Training loop: Adam with constant lr, optional EMA, seeded batches; stops on a NaN/Inf loss;
resumable from the training state it saves every `checkpoint_every` steps (cdlbench/run/train_state.py)."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..denoiser import Denoiser
from .train_state import (checkpoint_interval, discard_train_state, load_train_state, save_train_state,
                          training_fingerprint)


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or Inf; the cell stops with this reason."""


@dataclass
class TrainLog:
    steps: int = 0
    final_loss: float = float("nan")
    seconds: float = 0.0
    history: list = field(default_factory=list)     # (step, mean loss over the last log_every steps)
    optimizer_state: dict | None = None              # Adam's state at the end (a pretraining a fine-tune resumes)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    for pe, p in zip(ema.parameters(), net.parameters()):
        pe.lerp_(p, 1.0 - decay)


def _check_finite(values: list[float], first_step: int, parts: dict) -> None:
    """NonFiniteLoss naming the first non-finite of the per-step losses `values` (of steps
    first_step, first_step + 1, ...; 0-based as in the loop)."""
    for i, value in enumerate(values):
        if not math.isfinite(value):
            last = first_step + len(values) - 1
            shown = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in parts.items()}
            raise NonFiniteLoss(f"loss became {value} at step {first_step + i} (losses of steps {first_step}-{last} "
                                f"read back together; parts of step {last}: {shown})")


def batch_indices(step: int, batch_size: int, n: int, order: str, generator: torch.Generator,
                  device) -> torch.Tensor:
    """The training points of one step: `random` draws batch_size indices with replacement from
    the generator; `sequential` takes the next batch_size points of the set in its own order,
    wrapping around at the end (as the CDL authors' 2-D reference code feeds its fixed set)."""
    if order == "sequential":
        return torch.arange(step * batch_size, (step + 1) * batch_size, device=device) % n
    return torch.randint(0, n, (batch_size,), generator=generator, device=device)


def train(net: torch.nn.Module, loss_fn, data: torch.Tensor, cfg: dict, generator: torch.Generator,
          progress: bool = True, desc: str = "train", labels: torch.Tensor | None = None,
          state_path: str | Path | None = None, init_optimizer: dict | None = None,
          on_snapshot=None) -> tuple[torch.nn.Module, TrainLog]:
    """Train `net` (an eps network) on `data` [n, *shape] with `loss_fn` for cfg['steps'] Adam steps
    (cfg: steps, batch_size, lr, ema, log_every, optional checkpoint_every); returns the network
    to sample from (the EMA copy when cfg['ema'] is set) and the log. labels [n] (class of each
    training point) train a class-conditional network: each batch's labels go to the loss with it.

    Loss read-back: each step's loss stays on the device; the losses of a `log_every` block are
    read back once, at its end (one device sync per block instead of one per step), summed as
    Python floats in step order (the history is the same to the last bit as with a read-back per
    step) and checked there. A NaN/Inf loss raises NonFiniteLoss at the end of its block, naming
    the first non-finite step; the steps after it have already updated the weights with
    non-finite gradients, which does not matter since the training fails either way.

    Resume (state_path given): every `checkpoint_interval(cfg)` steps the full training state
    (weights, Adam, EMA, generator state, pending losses, history) is saved atomically to
    state_path (see cdlbench/run/train_state.py; the caller's rule is `train_state_path(checkpoint)`).
    At the start, a valid state file of this same training (same fingerprint: config, initial
    weights, generator state, data, loss) is resumed from; the result is bit-for-bit that of an
    uninterrupted training. A corrupt or foreign file is ignored with a TrainStateIgnored warning.
    The state file is deleted when the training ends, successfully or with NonFiniteLoss (which
    a resume would only reproduce); it is kept when anything else interrupts it.
    Losses must be stateless between calls (all their randomness from `generator`).

    init_optimizer: Adam's state to start from (a fine-tune with resume_optimizer; else Adam starts
    fresh). on_snapshot(step, state_dict, log): called after each step listed in cfg['snapshots']
    (before the last) with the weights sampled from (the EMA copy where EMA is on)."""
    steps, log_every = int(cfg["steps"]), int(cfg["log_every"])
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    if init_optimizer is not None:
        opt.load_state_dict(init_optimizer)
        for group in opt.param_groups:            # this training's lr, the pretraining's moments
            group["lr"] = cfg["lr"]
    snapshots = set(cfg.get("snapshots") or ())
    ema = copy.deepcopy(net).requires_grad_(False) if cfg.get("ema") else None
    denoiser = Denoiser.wrap(net)   # eps or EDM-preconditioned (x0) network
    log = TrainLog()
    first, count, pending, seconds_before = 0, 0, None, 0.0
    losses = None          # [min(log_every, steps)] per-step losses of the current block, on the loss's device
    every = fingerprint = None
    if state_path is not None:
        state_path = Path(state_path)
        every = checkpoint_interval(cfg)
        fingerprint = training_fingerprint(cfg, net, loss_fn, data, labels, generator)
        state = load_train_state(state_path, fingerprint, steps)
        if state is not None:
            net.load_state_dict(state["net"])
            opt.load_state_dict(state["optimizer"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            generator.set_state(state["generator"])
            first, seconds_before = state["step"], state["seconds"]
            log.history = [(int(s), float(v)) for s, v in state["history"]]
            pending = state["pending_losses"]
            count = pending.numel()
    start = time.perf_counter()
    bar = tqdm(range(first, steps), desc=desc, disable=not progress, leave=False, mininterval=1.0,
               initial=first, total=steps)
    try:
        for step in bar:
            idx = batch_indices(step, cfg["batch_size"], data.shape[0], cfg.get("batches", "random"), generator,
                                data.device)
            if labels is None:
                out = loss_fn(denoiser, data[idx], generator=generator)
            else:
                out = loss_fn(denoiser, data[idx], generator=generator, labels=labels[idx])
            loss = out.per_sample.mean()
            if losses is None:
                losses = torch.empty(min(log_every, steps), dtype=loss.dtype, device=loss.device)
                if pending is not None:
                    losses[:count] = pending.to(losses)
            losses[count] = loss.detach()          # device-side copy: no sync
            count += 1
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema_update(ema, net, cfg["ema"])
            if count == log_every or step == steps - 1:
                values = losses[:count].tolist()     # the one read-back of this block
                _check_finite(values, step + 1 - count, out.parts)
                running = 0.0
                for value in values:                 # as before: a running sum of Python floats
                    running = running + value
                log.history.append((step + 1, running / count))
                bar.set_postfix(loss=f"{running / count:.4f}")
                count = 0
            if on_snapshot is not None and step + 1 in snapshots and step + 1 < steps:
                _check_finite(losses[:count].tolist(), step + 1 - count, out.parts)   # never a NaN snapshot
                snap = TrainLog(step + 1, log.history[-1][1] if log.history else float("nan"),
                                seconds_before + time.perf_counter() - start, list(log.history))
                on_snapshot(step + 1, (ema if ema is not None else net).state_dict(), snap)
            if every and (step + 1) % every == 0 and step + 1 < steps:
                _check_finite(losses[:count].tolist(), step + 1 - count, out.parts)   # never save a NaN state
                save_train_state(state_path, fingerprint=fingerprint, step=step + 1, net=net.state_dict(),
                                 ema=None if ema is None else ema.state_dict(), optimizer=opt.state_dict(),
                                 generator=generator.get_state(), pending_losses=losses[:count].clone(),
                                 history=log.history, seconds=seconds_before + time.perf_counter() - start)
    except NonFiniteLoss:
        if state_path is not None:
            discard_train_state(state_path)
        raise
    finally:
        bar.close()
    if state_path is not None:
        discard_train_state(state_path)
    log.steps, log.seconds = steps, seconds_before + time.perf_counter() - start
    log.final_loss = log.history[-1][1] if log.history else float("nan")
    log.optimizer_state = opt.state_dict()
    return (ema if ema is not None else net), log
