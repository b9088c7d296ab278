"""Datasets, one per file; importing this package registers them."""
from . import digits, dino, gmm1d, images, toys  # noqa: F401
