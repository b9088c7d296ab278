"""Kernel Inception Distance (Binkowski et al. 2018, sec. 3): the unbiased MMD^2 with the cubic
polynomial kernel k(x, y) = (x.y / F + 1)^3 between extractor features, averaged over random
subsets; computed by torch-fidelity's `kid_featuresdict_to_metric` (seeded, so deterministic)."""
from __future__ import annotations

import torch

from ..constraints import positive
from ..registry import METRICS
from ..specs import MetricSpec
from .features import DIGITS, FeatureMetric, extractor_ok, import_fidelity


def kid_fidelity(gen: torch.Tensor, ref: torch.Tensor, subsets: int, subset_size: int, seed: int) -> float:
    """Mean KID over `subsets` random subsets of min(subset_size, n, m) points each."""
    import_fidelity()
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_featuresdict_to_metric

    size = min(subset_size, gen.shape[0], ref.shape[0])
    out = kid_featuresdict_to_metric({"f": gen}, {"f": ref}, "f", kid_subsets=subsets, kid_subset_size=size,
                                     rng_seed=seed, verbose=False)
    return float(out[KEY_METRIC_KID_MEAN])


@METRICS.register("kid", constraints={"extractor": extractor_ok, "n_samples": lambda v: None if v >= 2 else "must be >= 2",
                                      "batch_size": positive, "subsets": positive, "subset_size": positive},
                  spec=MetricSpec(label="KID", needs=("images",), headline=2))
class KID(FeatureMetric):
    """KID to the training split, via torch-fidelity (inception-v3-compat or digits-classifier features)."""

    def __init__(self, extractor: str = DIGITS, n_samples: int = 5000, batch_size: int = 256,
                 subsets: int = 100, subset_size: int = 1000, seed: int = 2020,
                 inception_weights: str | None = None, device=None, cache_dir=None, reference_key: str | None = None):
        super().__init__(extractor, n_samples, batch_size, inception_weights, device, cache_dir, reference_key)
        self.subsets, self.subset_size, self.seed = int(subsets), int(subset_size), int(seed)

    def __call__(self, samples: torch.Tensor, reference: torch.Tensor) -> float:
        gen, ref = self.features(samples, reference)
        return kid_fidelity(gen, ref, self.subsets, self.subset_size, self.seed)
