"""Imports every built-in component so that its decorator registers it."""
from .datasets import dino, gmm1d, toys  # noqa: F401
from .losses import cdl, ddpm, itd  # noqa: F401
from .metrics import mmd, score_error  # noqa: F401
from .models import mlp  # noqa: F401
from .samplers import ddpm as ddpm_sampler, picard  # noqa: F401
from .losses import edm as edm_loss  # noqa: F401
from .samplers import ddim, euler, heun  # noqa: F401
from .datasets import digits, images  # noqa: F401
from .metrics import class_accuracy, fid, kid  # noqa: F401
from .models import diffusers_unet, unet  # noqa: F401
