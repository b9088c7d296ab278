"""Networks, one per file; importing this package registers them. digits_classifier is not a
denoiser: it is the classifier that the digits metrics (FID/KID features, class accuracy) use."""
from . import diffusers_unet, mlp, mlp_discrete, unet  # noqa: F401
