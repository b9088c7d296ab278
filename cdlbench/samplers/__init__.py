"""Samplers, one per file; importing this package registers them."""
from . import ddim, ddpm, dpm_solver_pp, euler, heun, ipndm, newton, picard, taa, unipc  # noqa: F401
