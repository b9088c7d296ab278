"""Samplers, one per file; importing this package registers them."""
from . import ddim, ddpm, euler, heun, newton, picard, taa  # noqa: F401
