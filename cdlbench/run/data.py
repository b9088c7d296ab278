"""A dataset instantiated for one seed: its training points, per-dimension variance and labels."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..diffusion.itd import VARIANCE_FLOOR
from ..registry import DATASETS
from ..seeding import make_generator
from ..specs import declared
from ..suite.schema import Component


@dataclass
class Prepared:
    """Training data [n, *shape] of one seed, its per-dimension variance (clamped to VARIANCE_FLOOR:
    a constant dimension keeps a finite log-variance for the Gaussian reference h_G, mmse_G, and
    is left out of the default proposal; docs/method.md section 2) and its class labels (None for
    an unlabelled set); `is_image` from the dataset's spec."""
    dataset: object
    data: torch.Tensor
    data_var: torch.Tensor
    labels: torch.Tensor | None = None
    is_image: bool = False

    @property
    def num_classes(self) -> int:
        if self.labels is None:
            return 0
        return max(int(self.dataset.num_classes or 0), int(self.labels.max().item()) + 1)

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape[1:])


def prepare(ds: Component, seed: int, device: torch.device) -> Prepared:
    """The training set of dataset `ds` for `seed` (drawn on the CPU from its own generator, so the
    data do not depend on the device), moved to `device`."""
    dataset = DATASETS.build(ds.name, ds.params)
    data, labels = dataset.train_set(make_generator(torch.device("cpu"), seed, "data", ds.key()))
    spec = DATASETS.entry(ds.name).spec
    return Prepared(dataset, data.to(device), data.var(0, unbiased=False).clamp_min(VARIANCE_FLOOR).to(device),
                    None if labels is None else labels.long().to(device), declared(spec.kind, ds.params) == "images")


def reference_points(prep: Prepared, seed: int, n: int | None, source: str = "train") -> torch.Tensor:
    """The data a metric compares samples with. source `train`: the whole training set in its own
    order (n None or at least the set), else n points drawn without replacement from the seed's
    generator; `fresh`: n new draws from the dataset's law (their own generator per count, so
    sets of different sizes are independent), never the training points."""
    if source == "fresh":
        if n is None:
            raise ValueError("a fresh reference set needs a size")
        gen = make_generator(torch.device("cpu"), seed, f"fresh-reference-{n}")
        return prep.dataset.sample(n, gen).to(prep.data.device)
    if n is None or n >= prep.data.shape[0]:
        return prep.data
    gen = make_generator(torch.device("cpu"), seed, "reference")
    idx = torch.randperm(prep.data.shape[0], generator=gen)[:n]
    return prep.data[idx.to(prep.data.device)]
