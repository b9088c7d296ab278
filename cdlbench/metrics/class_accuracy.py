"""Class accuracy of class-conditional samples: the fraction of samples that the dataset's own
classifier assigns to the class they were generated for (as "classification accuracy" of
conditional generative models, e.g. Ravuri and Vinyals 2019). 1.0 means every sample shows its
class; chance is about 1/C.

Classifiers come from the dataset (`dataset.classify(x)`): the Bayes classifier of a Gaussian
mixture (class = component), the cached digits CNN (models/digits_classifier.py) for `digits`."""
from __future__ import annotations

import inspect

import torch

from ..registry import METRICS
from .base import Metric
from ..specs import MetricSpec


def class_accuracy(predicted: torch.Tensor, requested: torch.Tensor) -> float:
    """Fraction of rows where the predicted class equals the requested one."""
    return float((predicted.to(requested.device) == requested).double().mean().item())


@METRICS.register("class_accuracy", spec=MetricSpec(unit="fraction", higher_is_better=True, label="class accuracy",
                                                    needs=("labels", "classifier"), context=("dataset", "labels")))
class ClassAccuracy(Metric):
    """Fraction of class-conditional samples that the dataset's classifier assigns to their requested class."""


    def __init__(self, cache_dir=None):
        self.cache_dir = cache_dir

    def __call__(self, samples: torch.Tensor, reference: torch.Tensor, dataset=None,
                 labels: torch.Tensor | None = None) -> float:
        if labels is None:
            raise ValueError("class_accuracy needs a class-conditional model (model field 'conditional: true')")
        classify = getattr(dataset, "classify")
        kwargs = {"cache_dir": self.cache_dir} if "cache_dir" in inspect.signature(classify).parameters else {}
        return class_accuracy(classify(samples.detach(), **kwargs), labels)   # classify may train its classifier first
