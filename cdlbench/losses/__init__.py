"""Training losses, one per file; importing this package registers them."""
from . import cdl, ddpm, edm, itd  # noqa: F401
