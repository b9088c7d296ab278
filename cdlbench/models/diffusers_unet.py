"""A pretrained `UNet2DModel` (diffusers) as an eps predictor on continuous log-SNR, e.g. the
DDPM CIFAR-10 checkpoint (Ho et al. 2020) that the paper fine-tunes with CDL (SPEC section 6).

The network was trained on integer steps t of the 1000-step linear-beta grid; a log-SNR a is
mapped to the fractional step t(a) by linear interpolation of a_t on that grid (a_t is
decreasing in t), which is exact on grid points and lets CDL ask for log-SNRs in between
(SPEC section 1). Out-of-range a is clamped to [a_999, a_0].

Offline only: `path` names a local folder holding the model's `config.json` and weights (as
written by `UNet2DModel.save_pretrained`, or the `unet/` folder of a DDPM pipeline).
Install the optional extra: pip install 'cdlbench[diffusers]'."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..diffusion.schedules import ddpm_logsnr
from ..registry import MODELS

HOW_TO = ("model 'diffusers-unet' loads a local copy of a pretrained UNet2DModel: download it once on a machine "
          "with internet (e.g. `python -c \"from diffusers import UNet2DModel; UNet2DModel.from_pretrained("
          "'google/ddpm-cifar10-32').save_pretrained('ddpm-cifar10-32')\"`), copy the folder here and set "
          "the model field 'path' to it")


def fractional_timestep(logsnr: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """t(a) in [0, T-1]: linear interpolation of the decreasing grid a_t [T] at a [N]."""
    flipped = grid.flip(0)                                         # increasing in index
    a = logsnr.clamp(float(flipped[0]), float(flipped[-1]))
    hi = torch.searchsorted(flipped, a).clamp(1, flipped.numel() - 1)
    lo = hi - 1
    w = (a - flipped[lo]) / (flipped[hi] - flipped[lo])
    pos = lo.to(a.dtype) + w                                       # index in the flipped grid
    return (grid.numel() - 1) - pos


def load_unet2d(path: str) -> nn.Module:
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise ImportError(f"diffusers is not installed (pip install 'cdlbench[diffusers]'); {HOW_TO}") from None
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json of a UNet2DModel here; {HOW_TO}")
    return UNet2DModel.from_pretrained(str(folder), local_files_only=True)


@MODELS.register("diffusers-unet", data="image")
class DiffusersUNet(nn.Module):
    """Pretrained diffusers UNet2DModel (e.g. DDPM CIFAR-10) as eps_theta(z, a) on continuous log-SNR."""

    def __init__(self, path: str, num_train_steps: int = 1000, shape: tuple = (3, 32, 32)):
        super().__init__()
        self.net = load_unet2d(path)
        size = getattr(self.net.config, "sample_size", None)
        channels = getattr(self.net.config, "in_channels", None)
        if size is not None and channels is not None:
            want = (channels, *((size, size) if isinstance(size, int) else tuple(size)))
            if tuple(shape) != want:
                raise ValueError(f"{path}: the pretrained model expects images {want}, the data set has {tuple(shape)}")
        self.register_buffer("grid", ddpm_logsnr(num_train_steps).float(), persistent=False)

    def forward(self, z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
        t = fractional_timestep(logsnr.float(), self.grid)
        return self.net(z, t).sample
