"""A pretrained `UNet2DModel` (diffusers) as an eps predictor on continuous log-SNR, e.g. the
DDPM CIFAR-10 checkpoint (Ho et al. 2020) that the paper fine-tunes with CDL (docs/method.md section 6).

The network was trained on integer steps t of the 1000-step linear-beta grid; a log-SNR a is
mapped to the fractional step t(a) by linear interpolation of a_t on that grid (a_t is
decreasing in t), which is exact on grid points and lets CDL ask for log-SNRs in between
(docs/method.md section 1). Out-of-range a is clamped to [a_999, a_0]. The step goes to the network as a
float tensor [N], one per row: the sinusoidal ("positional") time embedding of UNet2DModel
takes fractional steps; checkpoints with a learned (table) or Fourier time embedding do not
fit this mapping and are refused.

Class-conditional checkpoints (config `num_class_embeds` = K > 0) follow cdlbench's protocol:
`num_classes` = K and `forward(z, logsnr, class_labels=None)` with class_labels int64 [N].

Offline only: `path` names a local folder holding the model's `config.json` and weights (as
written by `UNet2DModel.save_pretrained`), or a saved DDPM pipeline whose `unet/` folder holds
them. A scheduler config found beside it (`scheduler_config.json`, or the pipeline's
`scheduler/`) is checked:
the mapping assumes eps prediction on the linear-beta DDPM grid.
Install the optional extra: pip install 'cdlbench[diffusers]'."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from ..diffusion.schedules import ddpm_logsnr
from ..registry import MODELS
from ..specs import ModelSpec
from .conditioning import checked_labels

HOW_TO = ("model 'diffusers-unet' loads a local copy of a pretrained UNet2DModel: download it once on a machine "
          "with internet (e.g. `python -c \"from diffusers import UNet2DModel; UNet2DModel.from_pretrained("
          "'google/ddpm-cifar10-32').save_pretrained('ddpm-cifar10-32')\"`), copy the folder here and set "
          "the model field 'path' to it")


def fractional_timestep(logsnr: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """t(a) in [0, T-1]: linear interpolation of the decreasing grid a_t [T] at a [N]."""
    flipped = grid.flip(0)                                         # increasing in index
    a = logsnr.clamp(float(flipped[0]), float(flipped[-1]))
    hi = torch.searchsorted(flipped, a.detach().contiguous()).clamp(1, flipped.numel() - 1)
    lo = hi - 1
    w = (a - flipped[lo]) / (flipped[hi] - flipped[lo])
    pos = lo.to(a.dtype) + w                                       # index in the flipped grid
    return (grid.numel() - 1) - pos


def unet_folder(path: str) -> Path:
    """The folder holding the UNet's config.json: `path` itself or its `unet/` (a saved pipeline)."""
    folder = Path(path).expanduser()
    for candidate in (folder, folder / "unet"):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(f"{folder}: no config.json of a UNet2DModel here; {HOW_TO}")


def checkpoint_classes(path: str) -> int:
    """The checkpoint's number of classes (config `num_class_embeds`; 0 when unconditional), read
    from config.json without diffusers."""
    config = json.loads((unet_folder(path) / "config.json").read_text())
    return int(config.get("num_class_embeds") or 0)


def _conditional(params: dict) -> bool | None:
    """Registry metadata for suite validation: is the checkpoint at `path` class-conditional?
    None (unknown) when it cannot be read; building the model then says why."""
    try:
        return checkpoint_classes(str(params["path"])) > 0
    except Exception:
        return None


def check_scheduler(unet_dir: Path, num_train_steps: int) -> None:
    """Refuse a checkpoint whose saved scheduler says it is not an eps predictor on the
    linear-beta DDPM grid of num_train_steps steps (the log-SNR -> step mapping would be wrong)."""
    candidates = [unet_dir / "scheduler_config.json"]
    if unet_dir.name == "unet":                                    # the unet/ folder of a saved pipeline
        candidates.append(unet_dir.parent / "scheduler" / "scheduler_config.json")
    for file in candidates:
        if not file.is_file():
            continue
        try:
            cfg = json.loads(file.read_text())
        except (OSError, ValueError):
            continue
        problems = []
        if cfg.get("prediction_type", "epsilon") != "epsilon":
            problems.append(f"prediction_type {cfg['prediction_type']!r} (only 'epsilon' is supported)")
        if cfg.get("beta_schedule", "linear") != "linear":
            problems.append(f"beta_schedule {cfg['beta_schedule']!r} (only the linear DDPM schedule is supported)")
        if cfg.get("trained_betas") is not None:
            problems.append("trained_betas (only the linear DDPM schedule is supported)")
        start, end = cfg.get("beta_start", 1e-4), cfg.get("beta_end", 0.02)
        if not (math.isclose(start, 1e-4, rel_tol=1e-6) and math.isclose(end, 0.02, rel_tol=1e-6)):
            problems.append(f"betas from {start} to {end} (expected 0.0001 to 0.02)")
        steps = cfg.get("num_train_timesteps", num_train_steps)
        if steps != num_train_steps:
            problems.append(f"num_train_timesteps {steps} (the model field num_train_steps is {num_train_steps})")
        if problems:
            raise ValueError(f"{file}: the checkpoint's scheduler does not match the DDPM grid this model maps "
                             f"log-SNR onto: {'; '.join(problems)}")
        return


def load_unet2d(path: str) -> nn.Module:
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise ImportError(f"diffusers is not installed (pip install 'cdlbench[diffusers]'); {HOW_TO}") from None
    return UNet2DModel.from_pretrained(str(unet_folder(path)), local_files_only=True, low_cpu_mem_usage=False)


@MODELS.register("diffusers-unet", spec=ModelSpec(data="images", conditional=_conditional))
class DiffusersUNet(nn.Module):
    """Pretrained diffusers UNet2DModel (e.g. DDPM CIFAR-10) as eps_theta(z, a) on continuous log-SNR."""

    def __init__(self, path: str, num_train_steps: int = 1000, shape: tuple = (3, 32, 32),
                 num_classes: int | None = None):
        super().__init__()
        self.net = load_unet2d(path)
        cfg = self.net.config
        check_scheduler(unet_folder(path), num_train_steps)
        kind = getattr(cfg, "time_embedding_type", "positional")
        if kind != "positional":
            raise ValueError(f"{path}: the UNet2DModel has a {kind!r} time embedding; only 'positional' (sinusoidal, "
                             f"as in DDPM) takes the fractional steps this model maps log-SNR to")
        if getattr(cfg, "class_embed_type", None) is not None:
            raise ValueError(f"{path}: class_embed_type {cfg.class_embed_type!r} is not supported; class-conditional "
                             f"checkpoints must use integer class labels (num_class_embeds)")
        size = getattr(cfg, "sample_size", None)
        channels = getattr(cfg, "in_channels", None)
        if size is not None and channels is not None:
            want = (channels, *((size, size) if isinstance(size, int) else tuple(size)))
            if tuple(shape) != want:
                raise ValueError(f"{path}: the pretrained model expects images {want}, the data set has {tuple(shape)}")
        elif channels is not None and tuple(shape)[0] != channels:
            raise ValueError(f"{path}: the pretrained model expects {channels} channels, the data set has {tuple(shape)}")
        out = getattr(cfg, "out_channels", channels)
        if out != channels:
            raise ValueError(f"{path}: the UNet2DModel has {channels} input and {out} output channels; a noise "
                             f"predictor needs as many outputs as inputs")
        self.num_classes = int(getattr(cfg, "num_class_embeds", None) or 0)
        if num_classes is not None and self.num_classes and int(num_classes) != self.num_classes:
            raise ValueError(f"{path}: the pretrained model is conditional on {self.num_classes} classes, "
                             f"the data set has {int(num_classes)}")
        self.path = str(path)
        self.register_buffer("grid", ddpm_logsnr(num_train_steps).float(), persistent=False)

    def forward(self, z: torch.Tensor, logsnr: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = checked_labels(self.num_classes, class_labels, z.shape[0], f"{self.path}: the model")
        a = torch.as_tensor(logsnr, dtype=torch.float32, device=z.device)
        t = fractional_timestep(a.expand(z.shape[0]) if a.ndim == 0 else a.reshape(z.shape[0]), self.grid)
        if labels is None:
            return self.net(z, t).sample
        return self.net(z, t, class_labels=labels).sample
