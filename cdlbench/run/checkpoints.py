"""Cached checkpoints with integrity checks.

A checkpoint file holds the trained weights, the training log, the config that made them,
`config_hash` (SHA-256 of that config in canonical JSON) and `content_hash` (SHA-256 over
every tensor's name, dtype, shape and bytes). Loading uses `torch.load(weights_only=True)`
(no pickled code runs) and re-derives both hashes; any mismatch, unreadable file or missing
field is a `CheckpointInvalid` with the reason, and the runner retrains. Files are written
to a unique temporary name, fsynced and renamed, so a kill never leaves a half-written
checkpoint under the real name and two runs sharing a cache never interleave writes.
A kill between the write and the rename leaves `.<name>.<pid>.<hex>.tmp` behind;
`clean_stale_temporaries` removes those of dead processes.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from pathlib import Path

import torch

CACHE_FORMAT = 2
#: temporary name of an unfinished save: `.<name>.<pid>.<8 hex digits>.tmp` (save_checkpoint, train_state)
TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<hex>[0-9a-f]{8})\.tmp$")


class CheckpointInvalid(ValueError):
    """The cached file cannot be trusted; the message says why."""


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: dict) -> str:
    """SHA-256 of the training config in canonical JSON."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def content_hash(state_dict: dict) -> str:
    """SHA-256 over (name, dtype, shape, raw bytes) of every tensor, in name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: str | Path, state_dict: dict, train_log: dict, config: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu_state = {k: v.detach().to("cpu") for k, v in state_dict.items()}
    blob = {"format": CACHE_FORMAT, "state_dict": cpu_state, "train_log": train_log,
            "config": json.loads(canonical_json(config)), "config_hash": config_hash(config),
            "content_hash": content_hash(cpu_state)}
    save_atomically(blob, path)


def save_atomically(blob: dict, path: Path) -> None:
    """torch.save to a unique temporary name beside `path`, fsync, rename: a kill never leaves a
    half-written file under the real name, and two writers never interleave."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    # created exclusively, never through a planted link (O_CREAT|O_EXCL|O_NOFOLLOW)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(blob, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, config: dict, map_location=None) -> dict:
    """The verified blob of `path` made by `config`; raises CheckpointInvalid otherwise."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # truncated zip, bit rot, not a torch file, a pickle with code in it
        raise CheckpointInvalid(f"unreadable ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]})") from None
    if not isinstance(blob, dict) or blob.get("format") != CACHE_FORMAT:
        raise CheckpointInvalid(f"format {blob.get('format') if isinstance(blob, dict) else '?'!r}, "
                                f"expected {CACHE_FORMAT}")
    for key in ("state_dict", "train_log", "config_hash", "content_hash"):
        if key not in blob:
            raise CheckpointInvalid(f"missing field {key!r}")
    if blob["config_hash"] != config_hash(config):
        raise CheckpointInvalid("made by a different config (config hash mismatch)")
    if blob["content_hash"] != content_hash(blob["state_dict"]):
        raise CheckpointInvalid("weights do not match their content hash (corrupt file)")
    if map_location is not None:
        blob["state_dict"] = {k: v.to(map_location) for k, v in blob["state_dict"].items()}
    return blob


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # alive, another user's
        return True
    except OverflowError:
        return False
    return True


def clean_stale_temporaries(cache_dir: str | Path, min_age_s: float = 300.0) -> list[Path]:
    """Remove the temporary files of interrupted saves in `cache_dir` (not recursive): names
    `.<name>.<pid>.<hex>.tmp` unmodified for `min_age_s` seconds whose process is gone. A live
    pid (the writer, or an unrelated process that reused it) keeps its file; the age covers a
    writer on another machine sharing the directory. Returns the removed paths."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return []
    removed, now = [], time.time()
    for path in cache_dir.iterdir():
        match = TEMPORARY_NAME.match(path.name)
        if match is None or not path.is_file():
            continue
        try:
            if now - path.stat().st_mtime < min_age_s or _pid_alive(int(match["pid"])):
                continue
            path.unlink()
        except FileNotFoundError:     # its writer renamed it, or another cleaner was first
            continue
        removed.append(path)
    return removed
