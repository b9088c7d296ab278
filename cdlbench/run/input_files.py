"""Content digests of the files a training depends on: a dataset `path`, a pretrained model's
`path` and `train.init_from`. They enter the training config that cached checkpoints are
verified against (cdlbench/checkpoints.py), so replacing the data or the pretrained weights at
the same path retrains instead of reusing a checkpoint made from the old files. Digests are
SHA-256 over file names and bytes (a folder: every file below it, in name order) and are
memoised per (path, size, mtime) within a process.

An `init_from` file is checked before it is hashed: only a regular file of at most
`init_from.MAX_CHECKPOINT_BYTES` is read (a directory, a FIFO or a 40 GB sparse file is not
hashed at all; its training then refuses it at once, naming the file and why)."""
from __future__ import annotations

import hashlib
import os
import stat
from functools import lru_cache
from pathlib import Path

from .init_from import MAX_CHECKPOINT_BYTES

# (component, parameter) pairs naming input files
INPUT_FIELDS = (("dataset", "path"), ("model", "path"), ("train", "init_from"))


@lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def path_digest(path: str | Path) -> str | None:
    """SHA-256 of a file, or of a folder's files (relative names and contents); None when absent."""
    p = Path(path).expanduser()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(p) if f != p else f.name}|".encode())
        h.update(_file_digest(str(f), st.st_size, st.st_mtime_ns).encode())
    return h.hexdigest()


def _hashable_checkpoint(path: str) -> bool:
    """An init_from file worth hashing: a regular file of at most MAX_CHECKPOINT_BYTES (stat only)."""
    try:
        st = os.stat(Path(path).expanduser())
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size <= MAX_CHECKPOINT_BYTES


def input_digests(parts: dict) -> dict:
    """{"model.path": digest, ...} for the INPUT_FIELDS present in parts ({"dataset": params, ...})."""
    out = {}
    for comp, field in INPUT_FIELDS:
        value = (parts.get(comp) or {}).get(field)
        if isinstance(value, str) and value:
            if (comp, field) == ("train", "init_from") and not _hashable_checkpoint(value):
                continue             # refused by load_init_weights before anything is read
            digest = path_digest(value)
            if digest is not None:
                out[f"{comp}.{field}"] = digest
    return out
