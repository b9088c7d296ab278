"""cdlbench: a benchmark harness for diffusion models trained with the Contrastive Diffusion Loss."""
__version__ = "0.1.0"

from .denoiser import Denoiser  # noqa: E402
from .registry import DATASETS, LOSSES, METRICS, MODELS, SAMPLERS, Registry  # noqa: E402

__all__ = ["Denoiser", "Registry", "DATASETS", "MODELS", "LOSSES", "SAMPLERS", "METRICS", "__version__"]
