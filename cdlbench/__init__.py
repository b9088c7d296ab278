"""cdlbench: a benchmark harness for diffusion models trained with the Contrastive Diffusion Loss."""
__version__ = "0.2.0"

__all__ = ["Denoiser", "Registry", "DATASETS", "MODELS", "LOSSES", "SAMPLERS", "METRICS", "__version__"]


def __getattr__(name):
    """Lazy: `import cdlbench` (and `cdlbench --help`/`--version`) does not import torch."""
    if name == "Denoiser":
        from .denoiser import Denoiser
        return Denoiser
    if name in ("Registry", "DATASETS", "MODELS", "LOSSES", "SAMPLERS", "METRICS"):
        from . import registry
        return getattr(registry, name)
    raise AttributeError(f"module 'cdlbench' has no attribute {name!r}")
