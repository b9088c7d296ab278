"""`train.init_from`: start training (fine-tuning) from saved weights instead of a fresh
initialisation. Accepts a cdlbench checkpoint (a dict with 'state_dict', as cached under
results/cache/) or a plain state dict saved with torch.save; loaded with weights_only=True."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import torch

MAX_CHECKPOINT_BYTES = 32 << 30


def load_init_weights(net: torch.nn.Module, path: str, device: torch.device | str = "cpu") -> None:
    """Copy the weights in `path` into `net`; errors name the file and the mismatching keys."""
    file = Path(path).expanduser()
    try:          # type and size first (stat only): a directory, a FIFO or a sparse 40 GB file is never read
        st = os.stat(file)
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise FileNotFoundError(f"train.init_from: {file} is not a file (a cdlbench checkpoint or a state dict)")
    if st.st_size > MAX_CHECKPOINT_BYTES:
        raise ValueError(f"train.init_from: {file} is {st.st_size:,} bytes; at most "
                         f"{MAX_CHECKPOINT_BYTES:,} are read")
    try:
        blob = torch.load(file, map_location=device, weights_only=True)
    except Exception as exc:
        raise ValueError(f"train.init_from: {file} is not a readable torch file ({type(exc).__name__}: {exc})") from None
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"train.init_from: {file} holds no state dict")
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:       # missing, unexpected or differently shaped tensors
        detail = " ".join(str(exc).split())[:400]
        raise ValueError(f"train.init_from: {file} does not fit model {type(net).__name__}: {detail}") from None
