"""Model 'diffusers-unet' against real (tiny, randomly initialised) diffusers UNet2DModels:
log-SNR -> fractional step mapping, class conditioning, checks on the checkpoint, fine-tuning
and one end-to-end run through the runner."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from cdlbench.denoiser import Denoiser  # noqa: E402
from cdlbench.diffusion.schedules import ddpm_logsnr  # noqa: E402
from cdlbench.models.diffusers_unet import DiffusersUNet, fractional_timestep  # noqa: E402
from cdlbench.registry import MODELS  # noqa: E402

SHAPE = (3, 8, 8)


def tiny_unet(channels: int = 3, **extra):
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=channels, out_channels=channels,
                                 block_out_channels=(8, 16), layers_per_block=1,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, **extra)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("unet") / "tiny"
    tiny_unet().save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def cond_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("unet") / "tiny-cond"
    tiny_unet(num_class_embeds=3).save_pretrained(str(path))
    return path


# ---------------------------------------------------------------- log-SNR -> step
def test_on_grid_equals_the_network_at_integer_steps(folder):
    model = DiffusersUNet(str(folder), shape=SHAPE).eval()
    grid = ddpm_logsnr(1000).float()
    steps = torch.tensor([0, 1, 7, 500, 998, 999])
    z = torch.randn(len(steps), *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(z, grid[steps])
        ref = model.net(z, steps).sample            # integer steps, as a DDPM pipeline calls it
    assert torch.allclose(ours, ref, atol=1e-5)
    # out of range is clamped to the ends of the grid
    with torch.no_grad():
        ends = model(z[:2], torch.tensor([50.0, -50.0]))
        assert torch.allclose(ends, model.net(z[:2], torch.tensor([0, 999])).sample, atol=1e-5)


def test_between_grid_points_is_the_network_at_the_fractional_step(folder):
    model = DiffusersUNet(str(folder), shape=SHAPE).eval()
    grid = ddpm_logsnr(1000).float()
    a = torch.stack([(grid[10] + grid[11]) / 2, 0.25 * grid[400] + 0.75 * grid[401]])
    t = fractional_timestep(a, grid)
    assert 10 < t[0] < 11 and 400 < t[1] < 401 and t[0] == pytest.approx(10.5, abs=1e-3)
    seen = []
    model.net.register_forward_pre_hook(lambda mod, args: seen.append(args[1].detach().clone()))
    z = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model(z, a)
        ref = model.net(z, t).sample
    assert torch.equal(ours, ref)
    # diffusers gets one float step per row, fractional, not rounded
    assert seen[0].dtype == torch.float32 and seen[0].shape == (2,) and torch.equal(seen[0], t)
    # a scalar log-SNR is broadcast to the batch
    with torch.no_grad():
        assert torch.allclose(model(z, a[0]), model(z, a[:1].expand(2)))


# ---------------------------------------------------------------- building and checks
def test_registry_build_and_errors(folder, tmp_path):
    model = MODELS.build("diffusers-unet", {"path": str(folder)}, shape=SHAPE, data_var=torch.tensor(0.3),
                         num_classes=10)   # a labelled data set does not make an unconditional checkpoint fail
    assert isinstance(model, DiffusersUNet) and model.num_classes == 0
    assert MODELS.entry("diffusers-unet").spec.data == "images"
    assert MODELS.entry("diffusers-unet").spec.conditional({"path": str(folder)}) is False
    assert MODELS.entry("diffusers-unet").spec.conditional({"path": str(tmp_path / "nope")}) is None
    with pytest.raises(ValueError, match=re.escape(str(folder)) + r".*expects images \(3, 8, 8\).*\(1, 8, 8\)"):
        DiffusersUNet(str(folder), shape=(1, 8, 8))
    with pytest.raises(ValueError, match=re.escape(str(folder))):
        MODELS.build("diffusers-unet", {"path": str(folder)}, shape=(3, 16, 16))
    with pytest.raises(FileNotFoundError, match="no config.json.*save_pretrained"):
        DiffusersUNet(str(tmp_path / "ddpm-cifar10-32"), shape=SHAPE)


def test_pipeline_folder_and_scheduler_check(folder, tmp_path):
    pipe = tmp_path / "pipe"
    shutil.copytree(folder, pipe / "unet")
    (pipe / "scheduler").mkdir()
    sched = {"_class_name": "DDPMScheduler", "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
             "num_train_timesteps": 1000, "trained_betas": None, "variance_type": "fixed_large"}
    (pipe / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched))
    assert DiffusersUNet(str(pipe), shape=SHAPE).num_classes == 0          # a saved pipeline: its unet/
    (pipe / "scheduler" / "scheduler_config.json").write_text(json.dumps({**sched, "prediction_type": "v_prediction"}))
    with pytest.raises(ValueError, match="scheduler_config.json.*prediction_type 'v_prediction'"):
        DiffusersUNet(str(pipe / "unet"), shape=SHAPE)
    (pipe / "scheduler" / "scheduler_config.json").write_text(json.dumps({**sched, "beta_schedule": "squaredcos_cap_v2"}))
    with pytest.raises(ValueError, match="beta_schedule 'squaredcos_cap_v2'"):
        DiffusersUNet(str(pipe), shape=SHAPE)


# ---------------------------------------------------------------- class conditioning
def test_class_conditional_checkpoint(cond_folder, folder):
    model = MODELS.build("diffusers-unet", {"path": str(cond_folder)}, shape=SHAPE, num_classes=3).eval()
    assert model.num_classes == 3
    assert MODELS.entry("diffusers-unet").spec.conditional({"path": str(cond_folder)}) is True
    z = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(3))
    a = torch.tensor([-2.0, 0.0, 3.0])
    with torch.no_grad():
        out0 = model(z, a, class_labels=torch.zeros(3, dtype=torch.long))
        out1 = model(z, a, class_labels=torch.tensor([1, 2, 1]))
        assert torch.allclose(out0, model.net(z, fractional_timestep(a, model.grid),
                                              class_labels=torch.zeros(3, dtype=torch.long)).sample)
        via_denoiser = Denoiser.wrap(model).eps(z, a, torch.tensor([1, 2, 1]))
    assert not torch.allclose(out0, out1)
    assert torch.equal(via_denoiser, out1)
    with pytest.raises(ValueError, match="needs class labels"):
        model(z, a)
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):          # a label the embedding table lacks
        model(z, a, class_labels=torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match=re.escape(str(cond_folder)) + r".*3 classes.*has 5"):
        DiffusersUNet(str(cond_folder), shape=SHAPE, num_classes=5)
    uncond = DiffusersUNet(str(folder), shape=SHAPE)
    with pytest.raises(ValueError, match="unconditional"):
        uncond(z, a, class_labels=torch.zeros(3, dtype=torch.long))


# ---------------------------------------------------------------- fine-tuning
@pytest.mark.parametrize("conditional", [False, True])
def test_fine_tuning_with_the_ddpm_loss_changes_the_weights(folder, cond_folder, conditional):
    from cdlbench.losses.ddpm import DDPMLoss

    model = DiffusersUNet(str(cond_folder if conditional else folder), shape=SHAPE).train()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss, gen = DDPMLoss(), torch.Generator().manual_seed(0)
    x0 = torch.rand(4, *SHAPE, generator=gen) * 2 - 1
    labels = torch.tensor([0, 1, 2, 0]) if conditional else None
    for _ in range(3):
        opt.zero_grad()
        out = loss(Denoiser.wrap(model), x0, generator=gen, labels=labels)
        value = out.per_sample.mean()
        assert torch.isfinite(value)
        value.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(list(model.parameters()))          # every weight moved
    assert model.net.conv_in.weight.requires_grad


# ---------------------------------------------------------------- end to end
@pytest.mark.slow
def test_runner_fine_tunes_and_samples(folder, tmp_path):
    from cdlbench.suite import parse_suite
    from cdlbench.run.coordinator import Runner

    px = np.random.default_rng(0).integers(0, 256, size=(16, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "tiny.npz", images=px)
    raw = {"name": "diffusers-e2e", "seeds": [0], "device": "cpu",
           "dataset": {"name": "images", "path": str(tmp_path / "tiny.npz")},
           "model": {"name": "diffusers-unet", "path": str(folder)},
           "train": {"steps": 3, "batch_size": 4, "log_every": 1},
           "losses": {"name": "ddpm"},
           "samplers": {"name": "ddpm", "steps": 5},
           "metrics": {"name": "mmd", "n_samples": 8}}
    suite = parse_suite(raw, file="x.yaml")
    summary = Runner(suite, out_dir=tmp_path / "run", progress=False, log=lambda *a, **k: None).execute()
    assert not summary.failed and len(summary.done) == 1
    rows = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    mmd = [r for r in rows if r["metric"] == "mmd"]
    assert len(mmd) == 1 and np.isfinite(mmd[0]["value"]) and mmd[0]["model"].startswith("diffusers-unet")
