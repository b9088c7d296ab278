"""Frechet Inception Distance (Heusel et al. 2017, eq. 6):
    FID = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))
between Gaussian fits (mean, covariance) of extractor features of generated and reference
images, computed by torch-fidelity's `fid_featuresdict_to_statistics` and
`fid_statistics_to_metric` on features from its extractor registry (features.py)."""
from __future__ import annotations

import torch

from ..constraints import positive
from ..registry import METRICS
from ..specs import MetricSpec
from .features import DIGITS, DEFAULT_LAYER, FeatureMetric, extractor_ok, import_fidelity


def frechet_distance_fidelity(gen: torch.Tensor, ref: torch.Tensor) -> float:
    """FID of two feature sets [n, F], [m, F] with torch-fidelity's statistics and metric functions."""
    import_fidelity()
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_featuresdict_to_statistics, fid_statistics_to_metric

    stats = [fid_featuresdict_to_statistics({"f": f.double()}, "f") for f in (gen, ref)]
    return float(fid_statistics_to_metric(stats[0], stats[1], False)[KEY_METRIC_FID])


@METRICS.register("fid", constraints={"extractor": extractor_ok, "n_samples": lambda v: None if v >= 2 else "must be >= 2",
                                      "batch_size": positive},
                  spec=MetricSpec(label="FID", needs=("images",), headline=0))
class FID(FeatureMetric):
    """FID to the training split, via torch-fidelity (inception-v3-compat or digits-classifier features)."""

    def __init__(self, extractor: str = DIGITS, n_samples: int = 5000, batch_size: int = 256,
                 inception_weights: str | None = None, device=None, cache_dir=None, reference_key: str | None = None):
        super().__init__(extractor, n_samples, batch_size, inception_weights, device, cache_dir, reference_key)
        self.layer = DEFAULT_LAYER[extractor]

    def __call__(self, samples: torch.Tensor, reference: torch.Tensor) -> float:
        gen, ref = self.features(samples, reference)
        return frechet_distance_fidelity(gen, ref)
