"""train_job(job, ctx): train one model, or take it from the checkpoint cache; a plain function
that returns what the eval jobs need and writes only the cache, never the run directory."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..registry import LOSSES, MODELS
from ..seeding import derived_seed, make_generator
from .checkpoints import CheckpointInvalid, load_checkpoint, save_checkpoint
from .context import JobContext
from .data import Prepared, prepare
from .init_from import load_init_weights
from .plan import TrainJob
from .training import train


@dataclass
class TrainOutcome:
    """`info`: the training log (steps, seconds, final_loss, history); `weights`: the trained state
    dict on the CPU when it could not be cached (else None: eval jobs load the checkpoint);
    `note`: what happened, for the log; `cache_error`: why the checkpoint could not be written."""
    info: dict
    weights: dict | None = None
    note: str = ""
    cache_error: str | None = None


def checkpoint_path(cache_dir: str | Path, key: str, device: torch.device) -> Path:
    return Path(cache_dir) / f"{key}-{device.type}.pt"


def train_state_path(cache_dir: str | Path, key: str, device: torch.device) -> Path:
    """Where an interrupted training keeps its resumable state (deleted once trained)."""
    return Path(cache_dir) / f"{key}-{device.type}.train-state.pt"


def build_network(job, prep: Prepared, device: torch.device) -> torch.nn.Module:
    """The model of a job, initialised from the seed (nn.Module init uses the global RNG)."""
    torch.manual_seed(derived_seed(job.seed, "init", job.model.key()))
    net = MODELS.build(job.model.name, job.model.params, shape=prep.shape, data_var=prep.data_var.cpu(),
                       num_classes=prep.num_classes)
    return net.to(device)


def network_classes(net: torch.nn.Module) -> int:
    """Classes of a class-conditional network (0: unconditional); every model sets num_classes."""
    return int(getattr(net, "num_classes", 0) or 0)


def cached(job: TrainJob, device: torch.device, log) -> dict | None:
    """The verified cached checkpoint blob, or None (absent, disabled, or invalid: retrain)."""
    path = checkpoint_path(job.cache_dir, job.key, device)
    if not job.use_cache or not path.exists():
        return None
    try:      # weights_only load, config hash and content hash (cdlbench/run/checkpoints.py)
        return load_checkpoint(path, job.config, map_location=device)
    except (CheckpointInvalid, RuntimeError) as exc:   # corrupt or stale cache entry: retrain
        log(f"  warning: cached checkpoint {path} {exc}; retraining")
        return None


def train_job(job: TrainJob, ctx: JobContext) -> TrainOutcome:
    """Train job.model with job.loss on job.dataset's training set for job.seed."""
    blob = cached(job, ctx.device, ctx.say)
    if blob is not None:
        return TrainOutcome(blob["train_log"], note=f"using cached checkpoint {checkpoint_path(job.cache_dir, job.key, ctx.device).name}")
    prep = prepare(job.dataset, job.seed, ctx.device)
    net = build_network(job, prep, ctx.device)
    if job.train.get("init_from"):                 # fine-tune from given weights (cdlbench/run/init_from.py)
        load_init_weights(net, job.train["init_from"], ctx.device)
    loss = LOSSES.build(job.loss.name, job.loss.params, data_var=prep.data_var.cpu(), shape=prep.shape)
    gen = make_generator(ctx.device, job.seed, "train", job.key)
    net.train()
    trained, tlog = train(net, loss, prep.data, job.train, gen, progress=ctx.progress, desc=f"train {job.label}",
                          labels=prep.labels if network_classes(net) else None,
                          state_path=train_state_path(job.cache_dir, job.key, ctx.device))
    trained.eval()
    info = {"steps": tlog.steps, "seconds": tlog.seconds, "final_loss": tlog.final_loss,
            "history": [list(h) for h in tlog.history]}
    state = trained.state_dict()
    try:      # temporary file, fsync, rename (cdlbench/run/checkpoints.py)
        save_checkpoint(checkpoint_path(job.cache_dir, job.key, ctx.device), state, info, job.config)
    except OSError as exc:      # read-only or full cache: the model is still evaluated, from memory
        reason = f"cannot write the checkpoint cache {job.cache_dir} ({exc.strerror or exc})"
        return TrainOutcome(info, {k: v.detach().cpu() for k, v in state.items()}, reason, reason)
    if not job.use_cache:      # --no-cache: retrained (and re-cached); eval jobs take these weights
        return TrainOutcome(info, {k: v.detach().cpu() for k, v in state.items()}, "retrained (--no-cache)")
    return TrainOutcome(info, note="trained and cached")
