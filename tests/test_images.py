"""Image data sets (digits, images), the U-Net, and the runner's data flow on [N, C, H, W]."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch

from cdlbench.suite import parse_suite, load_suite
from cdlbench.datasets.digits import Digits, digits_tensors
from cdlbench.datasets.images import ImageFolder, ImageSetError, read_image_set
from cdlbench.denoiser import Denoiser
from cdlbench.models.unet import UNet
from cdlbench.registry import DATASETS, METRICS, MODELS

PIL = pytest.importorskip("PIL.Image")


# ---------------------------------------------------------------- digits
def test_digits_range_shape_labels_and_disjoint_splits():
    train, test = Digits("train"), Digits("test")
    assert train.images.shape == (1438, 1, 8, 8) and test.images.shape == (359, 1, 8, 8)
    assert train.is_image and train.shape == (1, 8, 8) and train.num_classes == 10
    assert float(train.images.min()) == -1.0 and float(train.images.max()) == 1.0
    # sklearn's raw values are integers 0..16 -> x / 8 - 1 hits exactly those 17 levels
    levels = torch.unique(train.images)
    assert torch.allclose(levels, torch.arange(17) / 8.0 - 1.0)
    assert set(train.labels.tolist()) == set(range(10)) == set(test.labels.tolist())
    all_x, _ = digits_tensors("all")
    assert all_x.shape[0] == 1797
    flat = lambda x: {tuple(r) for r in x.flatten(1).tolist()}  # noqa: E731
    # no test image is a train image by index; (a few digits are pixel-identical duplicates)
    assert len(flat(train.images) & flat(test.images)) < 10


def test_digits_upsampling_repeats_pixels():
    x8, _ = digits_tensors("test", 8)
    x16, _ = digits_tensors("test", 16)
    assert x16.shape == (359, 1, 16, 16)
    assert torch.equal(x16[:, :, ::2, ::2], x8) and torch.equal(x16[:, :, 1::2, 1::2], x8)


def test_digits_registered_as_image_set():
    assert DATASETS["digits"].is_image and DATASETS["images"].is_image
    assert "images" in METRICS.entry("fid").spec.needs and "images" in METRICS.entry("kid").spec.needs


# ---------------------------------------------------------------- images: folder, npz, zip
def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PIL.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _pixels(n=5, h=4, w=6, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def test_folder_of_pngs_round_trips_exactly(tmp_path):
    px = _pixels()
    for i, a in enumerate(px):
        (tmp_path / f"img{i:03d}.png").write_bytes(_png(a))
    x, labels = read_image_set(tmp_path)
    assert x.shape == (5, 3, 4, 6) and labels is None
    back = ((x + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(back, px)


def test_grey_folder_with_labels(tmp_path):
    px = _pixels(c=1)[..., 0]
    for i, a in enumerate(px):
        (tmp_path / f"{i}.png").write_bytes(_png(a))
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": [[f"{i}.png", i % 2] for i in range(5)]}))
    ds = ImageFolder(str(tmp_path))
    assert ds.images.shape == (5, 1, 4, 6) and ds.labels.tolist() == [0, 1, 0, 1, 0] and ds.num_classes == 2


def test_edm_style_zip_with_labels(tmp_path):
    px = _pixels(n=4, h=8, w=8)
    path = tmp_path / "set.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i, a in enumerate(px):
            z.writestr(f"00000/img{i:08d}.png", _png(a))
        z.writestr("dataset.json", json.dumps({"labels": [[f"00000/img{i:08d}.png", 9 - i] for i in range(4)]}))
    x, labels = read_image_set(path)
    assert x.shape == (4, 3, 8, 8) and labels.tolist() == [9, 8, 7, 6]
    assert torch.equal(((x[2] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(px[2]))


@pytest.mark.parametrize("layout", ["nhwc", "nchw", "nhw"])
def test_npz_layouts(tmp_path, layout):
    px = _pixels(c=3 if layout != "nhw" else 1)
    arr = {"nhwc": px, "nchw": px.transpose(0, 3, 1, 2), "nhw": px[..., 0]}[layout]
    np.savez(tmp_path / "a.npz", images=arr, labels=np.arange(5))
    x, labels = read_image_set(tmp_path / "a.npz")
    assert x.shape == (5, px.shape[-1], 4, 6) and labels.tolist() == list(range(5))


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ImageSetError, match="nope.zip: no such file"):
        read_image_set(tmp_path / "nope.zip")
    (tmp_path / "a.png").write_bytes(_png(_pixels(n=1)[0]))
    (tmp_path / "b.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageSetError, match=r"b\.png: cannot decode"):
        read_image_set(tmp_path)
    (tmp_path / "b.png").write_bytes(_png(_pixels(n=1, h=5)[0]))
    with pytest.raises(ImageSetError, match=r"b\.png: image of shape \(5, 6, 3\)"):
        read_image_set(tmp_path)
    np.savez(tmp_path / "f.npz", images=np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(ImageSetError, match="f.npz: 'images' must be uint8"):
        read_image_set(tmp_path / "f.npz")
    np.savez(tmp_path / "k.npz", pictures=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ImageSetError, match="k.npz: no image array"):
        read_image_set(tmp_path / "k.npz")
    (tmp_path / "bad.zip").write_bytes(b"PK but not really")
    with pytest.raises(ImageSetError, match="bad.zip: not a readable zip"):
        read_image_set(tmp_path / "bad.zip")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": [["a.png", 1]]}))
    (tmp_path / "b.png").unlink()
    (tmp_path / "c.png").write_bytes(_png(_pixels(n=1)[0]))
    with pytest.raises(ImageSetError, match=r"dataset.json: no label for image c\.png"):
        read_image_set(tmp_path)


# ---------------------------------------------------------------- U-Net
def test_unet_shapes_conditioning_and_denoiser_views():
    torch.manual_seed(0)
    net = UNet(channels=[8, 16], shape=(1, 8, 8), conditional=True, num_classes=10)
    z, a = torch.randn(4, 1, 8, 8), torch.linspace(-8, 8, 4)
    lab = torch.tensor([0, 1, 2, 3])
    assert net(z, a, lab).shape == (4, 1, 8, 8) and net.num_classes == 10
    assert torch.equal(net(z, a, lab), torch.zeros_like(z))   # zero-initialised output layers: eps_hat = 0 at start
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    assert not torch.allclose(net(z, a, lab), net(z, a, lab.flip(0)))          # labels change the output
    with pytest.raises(ValueError, match="needs class labels"):
        net(z, a)
    with pytest.raises(ValueError, match=r"in \[0, 10\)"):
        net(z, a, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="no class labels"):
        UNet(channels=[8, 16], shape=(1, 8, 8), conditional=True)
    assert UNet(channels=[8, 16], shape=(1, 8, 8), num_classes=10).num_classes == 0   # not conditional
    d = Denoiser.wrap(net)
    assert d.num_classes == 10
    x0 = d.x0(z, torch.full((4,), 2.0), lab)
    assert x0.shape == z.shape and torch.isfinite(x0).all()
    rgb = UNet(channels=[8, 16, 16], attention=True, shape=(3, 32, 32))
    assert rgb(torch.randn(2, 3, 32, 32), torch.zeros(2)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="divisible by 4"):
        UNet(channels=[8, 8, 8], shape=(1, 6, 6))
    assert MODELS.entry("unet").spec.data == "images"


# ---------------------------------------------------------------- suites and the runner
def test_image_suites_parse(tmp_path):
    digits = load_suite("suites/digits.yaml")
    assert digits.datasets[0].name == "digits" and {m.name for m in digits.metrics} == {"fid", "kid"}
    cifar = load_suite("suites/cifar10.yaml")
    assert cifar.datasets[0].name == "images"


def test_fid_needs_images():
    from cdlbench.suite import SuiteError

    spec = {"name": "x", "dataset": {"name": "dino"}, "model": {"name": "mlp"}, "losses": {"name": "ddpm"},
            "samplers": {"name": "ddpm"}, "metrics": {"name": "fid"}}
    with pytest.raises(SuiteError, match="needs image data"):
        parse_suite(spec)


@pytest.mark.slow
def test_digits_runner_end_to_end(tmp_path):
    """Train a tiny U-Net on digits, sample with sequential DDPM and Picard, measure MMD on pixels."""
    from cdlbench.run.coordinator import Runner

    spec = {"name": "digits-e2e", "seeds": [0], "device": "cpu", "dataset": {"name": "digits"},
            "model": {"name": "unet", "channels": [8, 16]},
            "train": {"steps": 4, "batch_size": 16, "log_every": 2},
            "losses": [{"name": "ddpm"}, {"name": "cdl", "mc_points": 4}],
            "samplers": [{"name": "ddpm", "steps": 10}, {"name": "picard", "steps": 10, "window": 4, "tolerance": 1e-3}],
            "metrics": {"name": "mmd", "n_samples": 16}}
    suite = parse_suite(spec)
    summary = Runner(suite, tmp_path / "run", progress=False, log=lambda *a: None).execute()
    assert not summary.failed and len(summary.done) == 4
    rows = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    mmd = {(r["loss"], r["sampler"]): r["value"] for r in rows if r["metric"] == "mmd"}
    assert len(mmd) == 4 and all(np.isfinite(v) for v in mmd.values())
    # Picard with a tiny tolerance reproduces the sequential sampler with the same noise
    for loss in ("ddpm", "cdl[mc_points=4]"):
        seq = mmd[(loss, "ddpm[steps=10]")]
        par = [v for (lo, s), v in mmd.items() if lo == loss and s.startswith("picard")][0]
        assert par == pytest.approx(seq, rel=1e-3, abs=1e-6)
    saved = list((tmp_path / "run" / "samples").glob("*.npz"))
    with np.load(saved[0]) as blob:
        assert blob["samples"].shape[1:] == (1, 8, 8)


def test_init_from_loads_weights_and_names_bad_files(tmp_path):
    from cdlbench.suite import SuiteError
    from cdlbench.run.init_from import load_init_weights

    torch.manual_seed(0)
    src = UNet(channels=[8, 16], shape=(1, 8, 8))
    for p in src.parameters():
        torch.nn.init.normal_(p, std=0.1)
    torch.save({"state_dict": src.state_dict(), "train_log": {}}, tmp_path / "ckpt.pt")
    torch.save(src.state_dict(), tmp_path / "plain.pt")
    for name in ("ckpt.pt", "plain.pt"):
        dst = UNet(channels=[8, 16], shape=(1, 8, 8))
        load_init_weights(dst, str(tmp_path / name))
        assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    with pytest.raises(ValueError, match="plain.pt does not fit"):
        load_init_weights(UNet(channels=[8, 8], shape=(1, 8, 8)), str(tmp_path / "plain.pt"))
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_init_weights(src, str(tmp_path / "nope.pt"))
    spec = {"name": "x", "dataset": {"name": "digits"}, "model": {"name": "unet"}, "losses": {"name": "ddpm"},
            "samplers": {"name": "ddpm"}, "metrics": {"name": "mmd"}, "train": {"steps": 2, "init_from": "a.pt"}}
    assert parse_suite(spec).trains[0]["init_from"] == "a.pt"
    with pytest.raises(SuiteError, match="init_from"):
        parse_suite({**spec, "train": {"init_from": 3}})


def test_diffusers_unet_offline_error_says_how_to_provide_files(tmp_path):
    from cdlbench.models.diffusers_unet import DiffusersUNet, fractional_timestep
    from cdlbench.diffusion.schedules import ddpm_logsnr

    with pytest.raises((ImportError, FileNotFoundError), match="save_pretrained"):
        DiffusersUNet(path=str(tmp_path / "ddpm-cifar10-32"))
    grid = ddpm_logsnr(1000).float()
    t = fractional_timestep(torch.cat([grid[[0, 7, 999]], (grid[10:11] + grid[11:12]) / 2, torch.tensor([50.0])]), grid)
    assert torch.allclose(t, torch.tensor([0.0, 7.0, 999.0, 10.5, 0.0]), atol=1e-3)
