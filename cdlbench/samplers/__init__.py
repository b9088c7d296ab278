"""Samplers, one per file; importing this package registers them."""
from . import ddim, ddpm, dpm_solver_pp, euler, heun, newton, picard, taa  # noqa: F401
