"""train_job(job, ctx): train one model, or take it from the checkpoint cache; a plain function
that returns what the eval jobs need and writes only the cache, never the run directory.

Everything read back from the cache is verified like a checkpoint (cdlbench/run/checkpoints.py):
the final weights, every snapshot, and Adam's state of a pretraining whose fine-tunes resume it
(`<key>-<device>.adam.pt`: format, the training's config hash and a SHA-256 over every tensor
and value); a missing, truncated or bit-rotted one retrains. A resumable training state past a
snapshot that is damaged or missing is not resumed (the training restarts and writes the
snapshot again)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..registry import LOSSES, MODELS
from ..seeding import derived_seed, make_generator
from .checkpoints import CheckpointInvalid, config_hash, load_checkpoint, save_atomically, save_checkpoint
from .context import JobContext
from .data import Prepared, prepare
from .init_from import load_init_weights
from .plan import TrainJob
from .train_state import blob_hash, discard_train_state
from .training import train

#: format of the cached Adam state (`optimizer_path`); files of other formats are retrained
OPTIMIZER_FORMAT = 1


@dataclass
class TrainOutcome:
    """`info`: the training log (steps, seconds, final_loss, history); `weights`: the trained state
    dict on the CPU when it could not be cached (else None: eval jobs load the checkpoint);
    `note`: what happened, for the log; `cache_error`: why the checkpoint could not be written."""
    info: dict
    weights: dict | None = None
    note: str = ""
    cache_error: str | None = None
    optimizer: dict | None = None       # Adam's state, when not cached and a fine-tune resumes it


def snapshot_path(cache_dir: str | Path, key: str, step: int, device: torch.device) -> Path:
    """The weights of training `key` at `step` (train.snapshots)."""
    return Path(cache_dir) / f"{key}-step{step}-{device.type}.pt"


def snapshot_config(config: dict, step: int) -> dict:
    """What a snapshot checkpoint is verified against: its training's config and the step."""
    return {**config, "snapshot_step": int(step)}


def optimizer_path(cache_dir: str | Path, key: str, device: torch.device) -> Path:
    """Adam's final state of a pretraining whose fine-tunes set resume_optimizer."""
    return Path(cache_dir) / f"{key}-{device.type}.adam.pt"


def save_optimizer_state(path: Path, state: dict, config: dict) -> None:
    """Adam's state with its format, the training's config hash and a content hash, atomically."""
    blob = {"format": OPTIMIZER_FORMAT, "kind": "adam", "config_hash": config_hash(config), "optimizer": state}
    blob["content_hash"] = blob_hash(blob)
    save_atomically(blob, path)


def _moved(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _moved(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_moved(v, device) for v in obj)
    return obj


def load_optimizer_state(path: Path, config: dict, map_location=None) -> dict:
    """The verified Adam state at `path` of the training `config`; CheckpointInvalid (missing,
    unreadable, another format or training, content hash mismatch) otherwise."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointInvalid("missing") from None
    except Exception as exc:   # truncated zip, bit rot, not a torch file, a pickle with code in it
        raise CheckpointInvalid(f"unreadable ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]})") from None
    if not isinstance(blob, dict) or blob.get("format") != OPTIMIZER_FORMAT or blob.get("kind") != "adam":
        raise CheckpointInvalid(f"not a cached Adam state of format {OPTIMIZER_FORMAT}")
    missing = [k for k in ("config_hash", "optimizer", "content_hash") if k not in blob]
    if missing:
        raise CheckpointInvalid(f"missing field {missing[0]!r}")
    if blob["config_hash"] != config_hash(config):
        raise CheckpointInvalid("made by a different config (config hash mismatch)")
    if blob["content_hash"] != blob_hash(blob):
        raise CheckpointInvalid("does not match its content hash (corrupt file)")
    state = blob["optimizer"]
    return _moved(state, map_location) if map_location is not None else state


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
        blob = load_checkpoint(path, job.config, map_location=device)
        for step in snapshots_before_end(job.train):          # every snapshot must be there too
            load_checkpoint(snapshot_path(job.cache_dir, job.key, step, device), snapshot_config(job.config, step))
    except (CheckpointInvalid, RuntimeError, FileNotFoundError) as exc:   # corrupt, stale or incomplete: retrain
        log(f"  warning: cached checkpoint {path} (or a snapshot of it) {exc}; retraining")
        return None
    adam = optimizer_path(job.cache_dir, job.key, device)
    if job.keep_optimizer and not adam.exists():
        log(f"  {job.label}: cached without Adam's state, which a fine-tune resumes; retraining")
        return None
    if job.keep_optimizer:
        try:      # verified like the checkpoint: a truncated or bit-rotted state retrains
            load_optimizer_state(adam, job.config)
        except CheckpointInvalid as exc:
            log(f"  warning: {job.label}: cached Adam state {adam} {exc}; retraining")
            return None
    return blob


def snapshots_before_end(train: dict) -> list:
    return [s for s in train.get("snapshots") or () if s < train["steps"]]


def initial_weights(job: TrainJob, net: torch.nn.Module, device: torch.device) -> dict | None:
    """Load a fine-tune's starting weights into `net` (a checkpoint file, or its pretraining's
    weights: handed over, else from the cache); returns Adam's state to resume, or None."""
    init = job.train.get("init_from")
    if isinstance(init, str) and init:             # a file (cdlbench/run/init_from.py)
        load_init_weights(net, init, device)
        return None
    if job.init_key is None:
        return None
    if job.init_weights is not None:
        net.load_state_dict({k: v.to(device) for k, v in job.init_weights.items()})
    else:
        blob = load_checkpoint(checkpoint_path(job.cache_dir, job.init_key, device), job.init_config, map_location=device)
        net.load_state_dict(blob["state_dict"])
    if not init.get("resume_optimizer"):
        return None                                # Adam starts fresh
    if job.init_optimizer is not None:
        return job.init_optimizer
    path = optimizer_path(job.cache_dir, job.init_key, device)
    try:      # verified by the pretraining's job just before; damaged since: a clear failure
        return load_optimizer_state(path, job.init_config, map_location=device)
    except CheckpointInvalid as exc:
        raise CheckpointInvalid(f"the pretraining's Adam state {path} {exc}; rerun to retrain it") from None


def drop_state_past_bad_snapshot(job: TrainJob, device: torch.device, log) -> None:
    """A resumable training state skips the snapshots before its step: when one of those is
    missing or fails its checks (damaged between an interruption and the resume), the state is
    discarded, so the training restarts from step 0 and writes the snapshot again."""
    state = train_state_path(job.cache_dir, job.key, device)
    steps = snapshots_before_end(job.train)
    if not steps or not state.is_file():
        return
    try:
        step = torch.load(state, map_location="cpu", weights_only=True).get("step")
    except Exception:          # unreadable: train() ignores it with a warning
        return
    for s in steps:
        if not isinstance(step, int) or s > step:
            continue
        try:
            load_checkpoint(snapshot_path(job.cache_dir, job.key, s, device), snapshot_config(job.config, s))
        except CheckpointInvalid as exc:
            log(f"  warning: {job.label}: snapshot at step {s} {exc}; the training state saved at step {step} "
                f"is past it, so the training restarts from step 0")
            discard_train_state(state)
            return


def train_job(job: TrainJob, ctx: JobContext) -> TrainOutcome:
    """Train job.model with job.loss on job.dataset's training set for job.seed."""
    blob = cached(job, ctx.device, ctx.say)
    if blob is not None:
        return TrainOutcome(blob["train_log"], note=f"using cached checkpoint {checkpoint_path(job.cache_dir, job.key, ctx.device).name}")
    prep = prepare(job.dataset, job.seed, ctx.device)
    net = build_network(job, prep, ctx.device)
    init_optimizer = initial_weights(job, net, ctx.device)      # a fine-tune starts from trained weights
    loss = LOSSES.build(job.loss.name, job.loss.params, data_var=prep.data_var.cpu(), shape=prep.shape)
    gen = make_generator(ctx.device, job.seed, "train", job.key)
    net.train()
    drop_state_past_bad_snapshot(job, ctx.device, ctx.say)

    def save_snapshot(step: int, state: dict, log) -> None:   # a snapshot needs the cache: no fallback
        info = {"steps": log.steps, "seconds": log.seconds, "final_loss": log.final_loss,
                "history": [list(h) for h in log.history]}
        save_checkpoint(snapshot_path(job.cache_dir, job.key, step, ctx.device), state, info,
                        snapshot_config(job.config, step))

    trained, tlog = train(net, loss, prep.data, job.train, gen, progress=ctx.progress, desc=f"train {job.label}",
                          labels=prep.labels if network_classes(net) else None,
                          state_path=train_state_path(job.cache_dir, job.key, ctx.device),
                          init_optimizer=init_optimizer, on_snapshot=save_snapshot)
    trained.eval()
    info = {"steps": tlog.steps, "seconds": tlog.seconds, "final_loss": tlog.final_loss,
            "history": [list(h) for h in tlog.history]}
    state = trained.state_dict()
    optimizer = tlog.optimizer_state if job.keep_optimizer else None
    try:      # temporary file, fsync, rename (cdlbench/run/checkpoints.py)
        if optimizer is not None:
            Path(job.cache_dir).mkdir(parents=True, exist_ok=True)
            save_optimizer_state(optimizer_path(job.cache_dir, job.key, ctx.device), optimizer, job.config)
        save_checkpoint(checkpoint_path(job.cache_dir, job.key, ctx.device), state, info, job.config)
    except OSError as exc:      # read-only or full cache: the model is still evaluated, from memory
        reason = f"cannot write the checkpoint cache {job.cache_dir} ({exc.strerror or exc})"
        return TrainOutcome(info, {k: v.detach().cpu() for k, v in state.items()}, reason, reason, optimizer)
    if not job.use_cache:      # --no-cache: retrained (and re-cached); eval jobs take these weights
        return TrainOutcome(info, {k: v.detach().cpu() for k, v in state.items()}, "retrained (--no-cache)",
                            optimizer=optimizer)
    return TrainOutcome(info, note="trained and cached")
