"""Imports every built-in component so that its decorator registers it."""
from .datasets import dino, gmm1d, toys  # noqa: F401
from .losses import cdl, ddpm, itd  # noqa: F401
from .metrics import mmd  # noqa: F401
from .models import mlp  # noqa: F401
from .samplers import ddpm as ddpm_sampler, picard  # noqa: F401
