"""Stable seeds: every random draw comes from a generator seeded by a hash of what it is for."""
from __future__ import annotations

import hashlib
import json

import torch


def derived_seed(*parts) -> int:
    """A stable 63-bit seed from any JSON-able parts (seed, purpose, sample index, ...)."""
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def make_generator(device: torch.device, *parts) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derived_seed(*parts))
