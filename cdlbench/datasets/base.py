"""Dataset protocol: a finite training set plus fresh draws from the same law, all through
a passed generator; analytic sets also expose their exact noise predictor (oracle)."""
from __future__ import annotations

import torch


class Dataset:
    """Base for point-cloud data sets. Subclasses implement `sample(n, generator)`."""

    #: shape of one sample
    shape: tuple[int, ...] = (2,)
    #: True for image data (metrics such as FID need it)
    is_image: bool = False
    #: True when `exact_eps` is available
    has_exact_score: bool = False
    #: number of classes of a labelled set (None: unlabelled or known once loaded)
    num_classes: int | None = None

    def reference_key(self) -> str | None:
        """Names the reference split for cached metric statistics (FID/KID features); None: the
        runner derives one from the dataset's parameters."""
        return None

    def __init__(self, n_train: int = 100_000):
        self.n_train = int(n_train)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def train_data(self, generator: torch.Generator) -> torch.Tensor:
        """The finite training set, [n_train, *shape]."""
        return self.sample(self.n_train, generator)

    def train_set(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The training set and its class labels (int64 [n_train], or None for an unlabelled set)."""
        return self.train_data(generator), None

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The class of each sample [N] (labelled sets with a classifier; used by `class_accuracy`)."""
        raise NotImplementedError(f"{type(self).__name__} has no classifier")

    # Oracle interface (only where has_exact_score)
    def exact_eps(self, z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no exact score")

    def exact_score(self, z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
        """grad_z log p_a(z) = -E[eps | z] / sqrt(s(-a))."""
        sn = torch.sigmoid(-logsnr).sqrt().reshape(-1, *([1] * (z.ndim - 1)))
        return -self.exact_eps(z, logsnr) / sn


class FiniteImageSet(Dataset):
    """A fixed tensor of images (`self.images` [N, C, H, W]): training uses all of it, and
    `sample` draws with replacement from it."""

    is_image = True

    labels: torch.Tensor | None = None

    def train_data(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """The whole set (the generator is not used)."""
        return self.images

    def train_set(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The whole set and its labels (None when the files carry none)."""
        return self.images, self.labels

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, self.images.shape[0], (n,), generator=generator)
        return self.images[idx]
