"""docs/method.md section 6, 1-D two-mode Gaussian: p = 0.5 N(-5, 1) + 0.5 N(+5, 1), exact score and density known."""
from __future__ import annotations

from ..registry import DATASETS
from ..specs import DatasetSpec
from .mixture import GaussianMixture


@DATASETS.register("gmm1d", spec=DatasetSpec(labelled=True, exact_score=True, classifier=True,
                                                          exact_density=True))   # class = mode
class TwoModeGaussian1D(GaussianMixture):
    """1-D mixture 0.5 N(-separation, 1) + 0.5 N(+separation, 1) with its exact score."""

    def __init__(self, n_train: int = 100_000, separation: float = 5.0, variance: float = 1.0):
        super().__init__([[-separation], [separation]], variance, n_train=n_train)
