"""scikit-learn's bundled handwritten digits (UCI optdigits test set, Alpaydin and Kaynak 1998):
1797 grey 8x8 images with values 0..16 and labels 0..9, as an offline image set.

Pixels are scaled to [-1, 1] by x / 8 - 1. The native resolution is 8x8; `resolution` > 8
upsamples by nearest-neighbour repetition (an integer factor), so no pixel value is invented.
Split (deterministic, no RNG): image i is held out ("test") when i % 5 == 4, else "train"
(1438 train, 359 test; both hold every class about equally)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..registry import DATASETS
from ..specs import DatasetSpec
from .base import FiniteImageSet

SPLITS = ("train", "test", "all")


@lru_cache(maxsize=1)
def _load_raw() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [1797, 8, 8] in 0..16, labels int64 [1797]) from scikit-learn's bundled file."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("dataset 'digits' needs scikit-learn (it ships the 8x8 digits file): "
                          "pip install scikit-learn") from None
    bunch = load_digits()
    return bunch.images.astype(np.uint8), bunch.target.astype(np.int64)


def split_indices(n: int, split: str) -> np.ndarray:
    """Indices of a split: 'test' is every fifth image (i % 5 == 4), 'train' the rest, 'all' all."""
    idx = np.arange(n)
    if split == "all":
        return idx
    held_out = idx % 5 == 4
    if split == "test":
        return idx[held_out]
    if split == "train":
        return idx[~held_out]
    raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def digits_tensors(split: str = "train", resolution: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 [N, 1, R, R] in [-1, 1], labels int64 [N]) of one split."""
    if resolution % 8 != 0 or resolution < 8:
        raise ValueError(f"resolution must be a multiple of 8, got {resolution}")
    images, labels = _load_raw()
    idx = split_indices(len(images), split)
    x = torch.from_numpy(images[idx]).float().div(8.0).sub(1.0).unsqueeze(1)      # [N, 1, 8, 8]
    factor = resolution // 8
    if factor > 1:
        x = x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
    return x.contiguous(), torch.from_numpy(labels[idx])


def _split_ok(v):
    return None if v in SPLITS else f"must be one of {', '.join(SPLITS)}"


def _resolution_ok(v):
    return None if isinstance(v, int) and v >= 8 and v % 8 == 0 else "must be a multiple of 8 (8, 16, 32, ...)"


@DATASETS.register("digits", constraints={"split": _split_ok, "resolution": _resolution_ok},
                   spec=DatasetSpec(kind="images", labelled=True, classifier=True))
class Digits(FiniteImageSet):
    """scikit-learn's 8x8 handwritten digits in [-1, 1] with labels (1438 train / 359 test)."""

    is_image = True
    num_classes = 10

    def __init__(self, split: str = "train", resolution: int = 8):
        self.split, self.resolution = split, int(resolution)
        self.images, self.labels = digits_tensors(split, self.resolution)         # [N, 1, R, R], [N]
        self.shape = tuple(self.images.shape[1:])
        self.n_train = self.images.shape[0]

    def reference_key(self) -> str:
        """Names the reference set for cached feature statistics."""
        return f"digits/{self.split}/{self.resolution}"

    def classify(self, x: torch.Tensor, cache_dir=None) -> torch.Tensor:
        """The digit each image [N, 1, R, R] in [-1, 1] shows, by the cached digits CNN
        (trained on the train split; models/digits_classifier.py), as uint8 pixels like FID sees them."""
        from ..models.digits_classifier import DigitsCNN, load_digits_classifier, to_uint8

        net = load_digits_classifier(cache_dir)          # trains (with gradients) when not cached
        with torch.no_grad():
            logits = torch.cat([net(DigitsCNN.preprocess(to_uint8(chunk.cpu()))) for chunk in x.split(1024)])
        return logits.argmax(1)
