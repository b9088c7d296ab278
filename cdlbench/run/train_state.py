"""Resumable training state (issue 15, item 2): what `train` saves every `checkpoint_every` steps
so that a killed training resumes where it was and ends with bit-for-bit the weights, EMA and
history of an uninterrupted one.

File: `<cache>/<training key>-<device>.train-state.pt` beside the checkpoint it will become
(`train_state_path(checkpoint_path)`), one `torch.save` of plain tensors, dicts, lists and
numbers (readable with `torch.load(weights_only=True)`, so no pickled code runs):

    format          TRAIN_STATE_FORMAT
    fingerprint     SHA-256 of what makes this training (`training_fingerprint`): the train
                    config without `checkpoint_every`, the initial weights, the generator's
                    initial state, the data and labels, the loss, the device and torch version
    step            steps done (the next step to run)
    net, ema        state dicts (ema None without EMA)
    optimizer       the Adam state dict
    generator       `generator.get_state()` after `step` steps
    pending_losses  [count] per-step losses since the last history entry (not yet averaged)
    history         [[step, mean loss], ...] so far
    seconds         training time spent before this save (summed over interrupted attempts)
    content_hash    SHA-256 over every tensor (name, dtype, shape, bytes) and the other fields

It is written to a unique temporary name (`.<name>.<pid>.<hex>.tmp`, the checkpoints' pattern,
so `checkpoints.clean_stale_temporaries` also removes the leftovers of a kill), fsynced and
renamed. A file that cannot be read, has another format or fingerprint, or fails its content
hash is ignored with a `TrainStateIgnored` warning and the training starts from step 0; it is
overwritten by the next save. A save that fails (a read-only or full cache) is a
`TrainStateNotSaved` warning, never an error: the training goes on (it just cannot be resumed),
and the caller evaluates the model from memory when the checkpoint cannot be cached either.
`checkpoint_every` is not in the fingerprint (nor in the cache
key): where the checkpoints fall does not change a number, so a state saved with one interval
resumes under another.
"""
from __future__ import annotations

import functools
import hashlib
import math
import types
import warnings
from pathlib import Path

import torch

from .checkpoints import canonical_json, config_hash, content_hash, save_atomically

TRAIN_STATE_FORMAT = 1
STATE_SUFFIX = ".train-state.pt"
#: default interval: a tenth of the steps, but never more often than every MIN_DEFAULT_INTERVAL
MIN_DEFAULT_INTERVAL = 1000
#: at most this many data elements (evenly strided) enter the data fingerprint
_DATA_SAMPLE = 1 << 20


class TrainStateIgnored(UserWarning):
    """A training-state file was not used (unreadable, corrupt, or from another training)."""


class TrainStateNotSaved(UserWarning):
    """The training state could not be written (read-only or full cache); training goes on."""


def train_state_path(checkpoint_path: str | Path) -> Path:
    """Where the training state of the checkpoint `<dir>/<name>.pt` lives: `<dir>/<name>.train-state.pt`."""
    path = Path(checkpoint_path)
    stem = path.name[:-3] if path.name.endswith(".pt") else path.name
    return path.with_name(stem + STATE_SUFFIX)


def checkpoint_interval(cfg: dict) -> int | None:
    """Steps between two saves of the training state: cfg['checkpoint_every'] when given (0: never);
    when absent or None, every tenth of the steps but at least MIN_DEFAULT_INTERVAL steps apart
    (20 000 steps: every 2 000; 1 500 steps: once, at step 1 000; under 1 000 steps: never).
    None when no state is saved."""
    every = cfg.get("checkpoint_every")
    if every is None:
        every = max(MIN_DEFAULT_INTERVAL, math.ceil(int(cfg["steps"]) / 10))
    every = int(every)
    if every < 0:
        raise ValueError(f"checkpoint_every must be >= 0 (0: never), got {every}")
    return every or None


# ------------------------------------------------------------------ fingerprint
def _sha(t: torch.Tensor) -> str:
    t = t.detach().to("cpu").contiguous()
    return hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"").hexdigest()


def _tensor_fingerprint(t: torch.Tensor | None):
    """dtype, shape and the hash of at most _DATA_SAMPLE evenly strided elements."""
    if t is None:
        return None
    flat = t.detach().reshape(-1)
    stride = max(1, -(-flat.numel() // _DATA_SAMPLE))
    return [str(t.dtype), list(t.shape), _sha(flat[::stride])]


def _describe(obj, depth: int = 0):
    """A JSON-able description of a loss object: its type and its public attributes, recursively
    (tensors by hash, modules by weights); names starting with '_' are left out (counters, caches)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        return ["tensor", str(obj.dtype), list(obj.shape), _sha(obj)]
    if isinstance(obj, (list, tuple)):
        return [_describe(v, depth + 1) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _describe(v, depth + 1) for k, v in obj.items()}
    name = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if isinstance(obj, torch.nn.Module):
        return [name, content_hash(obj.state_dict())]
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, type)):
        return f"{obj.__module__}.{obj.__qualname__}"
    if isinstance(obj, functools.partial):
        return [name, _describe(obj.func, depth + 1), _describe(obj.args, depth + 1),
                _describe(obj.keywords, depth + 1)]
    if depth >= 4 or not hasattr(obj, "__dict__"):
        return name
    return [name, {k: _describe(v, depth + 1) for k, v in sorted(vars(obj).items()) if not k.startswith("_")}]


def training_fingerprint(cfg: dict, net: torch.nn.Module, loss_fn, data: torch.Tensor,
                         labels: torch.Tensor | None, generator: torch.Generator) -> str:
    """SHA-256 identifying one training, computed before its first step (initial weights and
    generator state): a state file is resumed only by the training that wrote it."""
    ident = {"format": TRAIN_STATE_FORMAT, "torch": torch.__version__, "device": data.device.type,
             "cfg": {k: v for k, v in cfg.items() if k != "checkpoint_every"},
             "net": [type(net).__qualname__, content_hash(net.state_dict())],
             "generator": [generator.device.type, _sha(generator.get_state())],
             "data": _tensor_fingerprint(data), "labels": _tensor_fingerprint(labels),
             "loss": _describe(loss_fn)}
    return config_hash(ident)


# ------------------------------------------------------------------ save and load
def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):     # a copy off a GPU; CPU tensors are written as they are
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _flatten(obj, prefix: str, tensors: dict, other: dict) -> None:
    """Split a nested blob into name -> tensor and name -> plain value (for the content hash)."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}", tensors, other)
    elif isinstance(obj, (list, tuple)) and any(isinstance(v, (torch.Tensor, dict, list, tuple)) for v in obj):
        for i, v in enumerate(obj):
            _flatten(v, f"{prefix}[{i}]", tensors, other)
    else:
        other[prefix] = obj


def _blob_hash(blob: dict) -> str:
    tensors, other = {}, {}
    _flatten({k: v for k, v in blob.items() if k != "content_hash"}, "", tensors, other)
    return hashlib.sha256((content_hash(tensors) + canonical_json(other)).encode()).hexdigest()


#: SHA-256 over every tensor and plain value of a nested blob but its "content_hash" (also the
#: digest of the cached Adam state, cdlbench/run/train_job.py)
blob_hash = _blob_hash


def save_train_state(path: str | Path, *, fingerprint: str, step: int, net: dict, ema: dict | None,
                     optimizer: dict, generator: torch.Tensor, pending_losses: torch.Tensor,
                     history: list, seconds: float) -> bool:
    """Atomically write the training state (temporary file, fsync, rename); False, with a
    TrainStateNotSaved warning, when the cache cannot be written (read-only, full)."""
    path = Path(path)
    blob = _to_cpu({"format": TRAIN_STATE_FORMAT, "fingerprint": fingerprint, "step": int(step), "net": net,
                    "ema": ema, "optimizer": optimizer, "generator": generator,
                    "pending_losses": pending_losses, "history": [[int(s), float(v)] for s, v in history],
                    "seconds": float(seconds)})
    blob["content_hash"] = _blob_hash(blob)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_atomically(blob, path)
    except OSError as exc:
        warnings.warn(f"training state {path} not saved ({exc.strerror or exc}); the training goes on but cannot "
                      f"be resumed if interrupted", TrainStateNotSaved, stacklevel=3)
        return False
    return True


def discard_train_state(path: str | Path) -> None:
    """Delete a training-state file (the training it resumes is over); a read-only cache that
    cannot delete it is not an error (no state was saved there either)."""
    try:
        Path(path).unlink(missing_ok=True)
    except OSError:
        pass


_FIELDS = ("fingerprint", "step", "net", "ema", "optimizer", "generator", "pending_losses", "history",
           "seconds", "content_hash")


def _check(blob, fingerprint: str, steps: int) -> str | None:
    """Why `blob` cannot be resumed, or None."""
    if not isinstance(blob, dict) or blob.get("format") != TRAIN_STATE_FORMAT:
        return f"format {blob.get('format') if isinstance(blob, dict) else '?'!r}, expected {TRAIN_STATE_FORMAT}"
    missing = [k for k in _FIELDS if k not in blob]
    if missing:
        return f"missing field {missing[0]!r}"
    if blob["fingerprint"] != fingerprint:
        return "made by a different training (fingerprint mismatch)"
    if blob["content_hash"] != _blob_hash(blob):
        return "content does not match its hash (corrupt file)"
    if not isinstance(blob["step"], int) or not 0 < blob["step"] < steps:
        return f"step {blob['step']!r} outside 1..{steps - 1}"
    return None


def load_train_state(path: str | Path, fingerprint: str, steps: int) -> dict | None:
    """The verified state at `path` for the training `fingerprint` of `steps` steps; None (with a
    TrainStateIgnored warning when a file is there) when there is none to resume."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # truncated zip, bit rot, not a torch file, a pickle with code in it
        reason = f"unreadable ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]})"
    else:
        reason = _check(blob, fingerprint, steps)
    if reason is not None:
        warnings.warn(f"training state {path} ignored: {reason}; training from step 0", TrainStateIgnored,
                      stacklevel=3)
        return None
    return blob
