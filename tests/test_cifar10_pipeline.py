"""suites/cifar10.yaml's pipeline at toy scale: the same losses (CDL with the suite's ITD and
zeta settings), samplers and fine-tuning path, on a CIFAR-shaped EDM-style zip (32x32 RGB with
labels) and a tiny randomly initialised diffusers UNet2DModel saved to disk, so everything but
the real data, the pretrained weights and Inception runs here."""
from __future__ import annotations

import copy
import io
import json
import zipfile

import numpy as np
import pytest
import torch
import yaml

diffusers = pytest.importorskip("diffusers")
PIL = pytest.importorskip("PIL.Image")

from cdlbench.suite import parse_suite  # noqa: E402
from cdlbench.run.coordinator import Runner  # noqa: E402


def _cifar_like_zip(path, n=12, seed=0):
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as archive:
        names = []
        for i in range(n):
            buf = io.BytesIO()
            PIL.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
            names.append(f"00000/img{i:08d}.png")
            archive.writestr(names[-1], buf.getvalue())
        archive.writestr("dataset.json", json.dumps({"labels": [[name, i % 10] for i, name in enumerate(names)]}))


def _tiny_pretrained(path, seed=0):
    torch.manual_seed(seed)
    diffusers.UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                          layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                          up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).save_pretrained(str(path))


def toy_cifar_suite(tmp_path) -> dict:
    """suites/cifar10.yaml with its files replaced by toy ones and its sizes cut to seconds."""
    raw = yaml.safe_load(open("suites/cifar10.yaml"))
    toy = copy.deepcopy(raw)
    _cifar_like_zip(tmp_path / "cifar10-32x32.zip")
    _tiny_pretrained(tmp_path / "ddpm-cifar10-32")
    toy.update(device="cpu", seeds=[0])
    toy["dataset"]["path"] = str(tmp_path / "cifar10-32x32.zip")
    toy["model"]["path"] = str(tmp_path / "ddpm-cifar10-32")
    toy["train"].update(steps=2, batch_size=4, log_every=1)
    for loss in toy["losses"]:
        if loss["name"] == "cdl":
            loss["mc_points"] = 4
    for sampler in toy["samplers"]:
        sampler["steps"] = 20
        if "window" in sampler:
            sampler["window"] = 4
    toy["metrics"] = [{"name": "mmd", "n_samples": 6}]      # Inception weights are not here
    return raw, toy


def test_cifar10_suite_pipeline_at_toy_scale(tmp_path):
    raw, toy = toy_cifar_suite(tmp_path)
    assert {lo["name"] for lo in raw["losses"]} == {"ddpm", "cdl"} and raw["model"]["name"] == "diffusers-unet"
    suite = parse_suite(toy, file="cifar10-toy.yaml")
    before = {k: v.clone() for k, v in diffusers.UNet2DModel.from_pretrained(toy["model"]["path"]).state_dict().items()}
    runner = Runner(suite, tmp_path / "run", progress=False, log=lambda *a, **k: None)
    summary = runner.execute()
    assert not summary.failed, summary.failed
    assert len(summary.done) == 4                          # 2 losses x 2 samplers
    rows = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    mmd = [r["value"] for r in rows if r["metric"] == "mmd"]
    assert len(mmd) == 4 and all(np.isfinite(mmd))
    # fine-tuning moved the pretrained weights (the cached checkpoint holds the fine-tuned net)
    cached = sorted((tmp_path / "cache").glob("*.pt"))
    assert len(cached) == 2
    tuned = torch.load(cached[0], weights_only=True)["state_dict"]
    moved = [k for k, v in before.items() if not torch.equal(tuned[f"net.{k}"].cpu(), v)]
    assert moved, "fine-tuning left every pretrained weight unchanged"


def test_replacing_the_pretrained_weights_retrains(tmp_path):
    """The checkpoint cache keys on the model files, not only their path."""
    _, toy = toy_cifar_suite(tmp_path)
    toy["losses"] = [{"name": "ddpm"}]
    toy["samplers"] = [{"name": "ddpm", "steps": 5}]
    suite = parse_suite(toy, file="cifar10-toy.yaml")
    Runner(suite, tmp_path / "run1", progress=False, log=lambda *a, **k: None, cache_dir=tmp_path / "cache").execute()
    logs = []
    Runner(suite, tmp_path / "run2", progress=False, log=logs.append, cache_dir=tmp_path / "cache").execute()
    assert any("using cached checkpoint" in str(line) for line in logs)          # same files: reused
    _tiny_pretrained(tmp_path / "ddpm-cifar10-32", seed=1)                        # same path, new weights
    logs = []
    Runner(suite, tmp_path / "run3", progress=False, log=logs.append, cache_dir=tmp_path / "cache").execute()
    assert not any("using cached checkpoint" in str(line) for line in logs)
    assert any("retraining" in str(line) for line in logs), logs
