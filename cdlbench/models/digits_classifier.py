"""A small CNN classifier of the 8x8 digits whose penultimate activations serve as an offline
stand-in for Inception-v3 features in FID/KID (the Frechet distance is defined for any
feature map; Heusel et al. 2017 use Inception pool3, the digits have no such network).

Trained on the `digits` train split only (held-out split kept for the accuracy test), with a
fixed seed, one thread and full-batch-order determinism, then cached as a state dict.
Input: uint8 images [N, C, H, W] in 0..255 (torch-fidelity's convention); colour is averaged
to grey and any H x W is area-resized to 8 x 8."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

FEATURE_DIM = 128
TRAINING_RECIPE = {"version": 2, "seed": 0, "epochs": 12, "batch_size": 64, "lr": 2e-3, "shift": 1}


class DigitsCNN(nn.Module):
    """conv(1->32) - conv(32->64) - maxpool - fc(1024->128) [features] - fc(128->10) [logits]."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 4 * 4, FEATURE_DIM)
        self.fc2 = nn.Linear(FEATURE_DIM, 10)
        # Fixed after training so that the train split has E ||f||^2 / F = 1 (KID's cubic kernel
        # (x.y / F + 1)^3 then sees unit-scale inner products, as with Inception features).
        self.register_buffer("feature_scale", torch.ones(()))

    @staticmethod
    def preprocess(images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 [N, C, H, W] -> float [N, 1, 8, 8] in [-1, 1]."""
        x = images_uint8.float().div(127.5).sub(1.0)
        if x.shape[1] != 1:
            x = x.mean(1, keepdim=True)
        if x.shape[-2:] != (8, 8):
            x = F.adaptive_avg_pool2d(x, (8, 8))
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:          # [N, 1, 8, 8] float -> [N, 128]
        h = F.relu(self.conv1(x))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)                   # [N, 64, 4, 4]
        return F.relu(self.fc1(h.flatten(1))) * self.feature_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:            # logits [N, 10]
        return self.fc2(self.features(x) / self.feature_scale)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8 0..255 (clipped, rounded): what is saved or fed to extractors."""
    return ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def _random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to max_shift pixels (padding with background -1)."""
    if max_shift == 0:
        return x
    n = x.shape[0]
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = dy[:, None, None] + torch.arange(8)[None, :, None]               # [N, 8, 1]
    cols = dx[:, None, None] + torch.arange(8)[None, None, :]               # [N, 1, 8]
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


@torch.enable_grad()          # callers may sit under no_grad/inference code (a first metric use)
def train_digits_classifier(recipe: dict = TRAINING_RECIPE) -> DigitsCNN:
    """Train on the digits train split (uint8-quantised, as the extractor will see it)."""
    from ..datasets.digits import digits_tensors

    images, labels = digits_tensors("train", 8)
    x = DigitsCNN.preprocess(to_uint8(images))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                       # reductions in a fixed order
    try:
        gen = torch.Generator().manual_seed(recipe["seed"])
        torch.manual_seed(recipe["seed"])
        net = DigitsCNN()
        opt = torch.optim.Adam(net.parameters(), lr=recipe["lr"])
        for _ in range(recipe["epochs"]):
            order = torch.randperm(x.shape[0], generator=gen)
            for i in range(0, x.shape[0], recipe["batch_size"]):
                idx = order[i:i + recipe["batch_size"]]
                batch = _random_shift(x[idx], recipe["shift"], gen)
                loss = F.cross_entropy(net(batch), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        net.eval().requires_grad_(False)
        with torch.no_grad():
            f = net.features(x)
            net.feature_scale.fill_(f.pow(2).sum(1).mean().div(FEATURE_DIM).rsqrt().item())
    finally:
        torch.set_num_threads(threads)
    return net


def default_cache_dir() -> Path:
    return Path(os.environ.get("CDLBENCH_CACHE", Path.home() / ".cache" / "cdlbench"))


def recipe_hash(recipe: dict = TRAINING_RECIPE) -> str:
    return hashlib.sha256(repr(sorted(recipe.items())).encode()).hexdigest()[:12]


def classifier_path(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"digits-classifier-{recipe_hash()}.pt"


def load_digits_classifier(cache_dir: str | Path | None = None) -> DigitsCNN:
    """The trained classifier, from the cache when present (trained and cached otherwise)."""
    path = classifier_path(cache_dir)
    if path.exists():
        try:
            return load_classifier_file(path)
        except Exception:           # unreadable cache entry: retrain and overwrite
            pass
    net = train_digits_classifier()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(net.state_dict(), tmp)
    os.replace(tmp, path)
    return net


def load_classifier_file(path: str | Path) -> DigitsCNN:
    net = DigitsCNN()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval().requires_grad_(False)


@torch.no_grad()
def accuracy(net: DigitsCNN, split: str = "test") -> float:
    from ..datasets.digits import digits_tensors

    images, labels = digits_tensors(split, 8)
    pred = net(DigitsCNN.preprocess(to_uint8(images))).argmax(1)
    return float((pred == labels).float().mean().item())
